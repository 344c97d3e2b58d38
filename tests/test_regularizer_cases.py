"""Every registered regularizer has its row in tests/regularizer_cases.py."""

from reglab.regularizers import REGULARIZERS
from reglab.validation import load_config
from regularizer_cases import REGULARIZER_CASES


def test_every_registered_regularizer_has_a_row():
    missing = {n for n in REGULARIZERS.names() if not n.startswith("_")} - set(REGULARIZER_CASES)
    assert not missing, f"add a row for {sorted(missing)} to tests/regularizer_cases.py"


def test_each_row_names_its_own_regularizer_and_validates():
    for name, case in REGULARIZER_CASES.items():
        cfg = load_config(None, [*case.overrides, f"optim.lr={case.lr}", f"regularizers=[{case.with_lam(case.lam)}]"])
        assert [r.name for r in cfg.regularizers] == [name]
