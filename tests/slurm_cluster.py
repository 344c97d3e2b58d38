"""A real single-node SLURM cluster in a private directory, for the SLURM tests and for trying
reglab's cluster path by hand (docs/slurm.md).

Everything a cluster has, from Debian's packages (slurmctld, slurmd, slurmdbd, slurm-client,
munge, mariadb-server): a munge daemon, a MariaDB server, slurmdbd (so `sacct` answers as on
real clusters), slurmctld and slurmd on this host, with two partitions: `low` (the default) and
`high`, whose jobs preempt `low`'s (partition_prio, REQUEUE). Every daemon runs in the
foreground as a child of this process, with its own key, sockets, free TCP ports, state, logs
and database under one directory, so nothing of the machine's own configuration is touched;
`stop()` cancels the jobs and stops the daemons, which also end when this process ends, however
it ends. Clients find the cluster through `SLURM_CONF` (`env()`).

It needs root (slurmd starts jobs as their user, munge and the config files check owners) and
the packages; `why_unavailable()` says what is missing, and the tests skip with that reason.
Containers usually lack a writable cgroup hierarchy, so the cluster uses no cgroup plugin:
processes are tracked through /proc (proctrack/linuxproc), tasks are not bound (task/none), and
usage is read from /proc (jobacct_gather/linux).

    python tests/slurm_cluster.py [DIR]   # start it, print the `export SLURM_CONF=...` line,
                                          # stop everything on Ctrl-C
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("munged", "mariadbd", "mariadb-install-db", "slurmdbd", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "squeue", "sacct", "sacctmgr", "scontrol", "scancel")
PACKAGES = "slurmctld slurmd slurmdbd slurm-client munge mariadb-server"
CPUS = 4
"""CPUs the node declares (config_overrides: more than this machine may have), so a few
array tasks of one CPU each run side by side."""
REQUEUE_DELAY_S = 10
"""Seconds a requeued job waits before it may start again (real clusters: about 120)."""
ACCOUNT = "reglab"
"""An account with an association for the current user, so `--account` can be tried."""


class ClusterUnavailable(RuntimeError):
    """The cluster cannot start here; the message says why (and the tests skip with it)."""


def why_unavailable() -> str | None:
    """None when a cluster can start here, else the reason (not root, a program missing)."""
    if sys.platform != "linux":
        return f"needs Linux, not {sys.platform}"
    if os.geteuid() != 0:
        return "needs root (slurmd starts jobs as their user; munge checks file owners)"
    missing = [p for p in DAEMONS + CLIENTS if _which(p) is None]
    if missing:
        return f"{', '.join(missing)} not found (apt-get install {PACKAGES})"
    return None


def _which(program: str) -> str | None:
    return shutil.which(program, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def _die_with_parent() -> None:
    """In a daemon, before exec: end with SIGTERM when the process that started it ends, even
    killed (SIGKILL, a test timeout), so no daemon outlives the tests."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class SlurmCluster:
    """Start with `start()` (or `with SlurmCluster(dir) as c:`), stop with `stop()`."""

    def __init__(self, base: Path, debug_flags: str = ""):
        self.base = Path(base).resolve()
        self.node = socket.gethostname().split(".")[0]
        self.procs: dict[str, subprocess.Popen] = {}
        self.ports = {k: _free_port() for k in ("slurmctld", "slurmd", "slurmdbd", "mariadb")}
        self.debug_flags = debug_flags

    # ------------------------------------------------------------------ paths
    @property
    def conf(self) -> Path:
        return self.base / "etc" / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.base / "munge" / "munge.socket"

    def env(self) -> dict[str, str]:
        """The environment variables a client (sbatch, sacct, submitit) needs."""
        return {"SLURM_CONF": str(self.conf)}

    def log(self, daemon: str) -> Path:
        """The daemon's own log file (its standard output and error go to DAEMON.out)."""
        return self.base / "log" / f"{daemon}.log"

    def _out(self, daemon: str) -> Path:
        return self.base / "log" / f"{daemon}.out"

    # ------------------------------------------------------------------ start / stop
    def __enter__(self) -> SlurmCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 90.0) -> None:
        why = why_unavailable()
        if why:
            raise ClusterUnavailable(why)
        for sub in ("etc", "munge", "log", "db", "ctld", "spool", "run"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        try:
            self._start_munge()
            self._start_mariadb(timeout)
            self._write_configs()
            self._daemon("slurmdbd", ["slurmdbd", "-D"])  # reads slurmdbd.conf next to $SLURM_CONF
            self._wait_port("slurmdbd", self.ports["slurmdbd"], timeout)
            self._run(["sacctmgr", "-i", "add", "cluster", "reglab"], check=False)
            self._daemon("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
            self._wait_port("slurmctld", self.ports["slurmctld"], timeout)
            self._daemon("slurmd", ["slurmd", "-D", "-f", str(self.conf), "-N", self.node])
            self._wait_node_idle(timeout)
            user = pwd.getpwuid(os.getuid()).pw_name
            # check=False: on a reused directory they exist already
            self._run(["sacctmgr", "-i", "add", "account", ACCOUNT, "Description=reglab", "Organization=reglab"], False)
            self._run(["sacctmgr", "-i", "add", "user", user, f"Account={ACCOUNT}"], check=False)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Cancel every job, wait for them to end, then stop the daemons (newest first)."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self._run(["scancel", "--full", "--quiet", "--user", str(os.getuid())], check=False)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.squeue():
                time.sleep(0.5)
        for name in reversed(list(self.procs)):
            p = self.procs.pop(name)
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=10)

    # ------------------------------------------------------------------ queries
    def squeue(self) -> list[str]:
        """One line per job still known to the controller: "JOBID STATE"."""
        out = self._run(["squeue", "-h", "-o", "%i %T"], check=False)
        return [line for line in out.splitlines() if line.strip()]

    def sacct(self, job_id: str) -> list[dict[str, str]]:
        """Accounting rows of a job (its array tasks and steps), as dicts."""
        out = self._run(
            ["sacct", "-j", job_id, "-P", "-D", "-o", "JobID,State,ExitCode,Partition,Account,QOS,AllocCPUS"]
        )
        lines = out.splitlines()
        if not lines:
            return []
        names = lines[0].split("|")
        return [dict(zip(names, line.split("|"))) for line in lines[1:]]

    # ------------------------------------------------------------------ daemons
    def _run(self, cmd: list[str], check: bool = True, timeout: float = 60) -> str:
        env = {**os.environ, **self.env()}
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        if check and p.returncode != 0:
            raise ClusterUnavailable(f"{' '.join(cmd)} failed: {(p.stderr or p.stdout).strip()}")
        return p.stdout

    def _daemon(self, name: str, cmd: list[str]) -> None:
        log = self._out(name).open("ab")
        exe = _which(cmd[0])
        assert exe is not None
        env = {**os.environ, **self.env()}
        self.procs[name] = subprocess.Popen(
            [exe, *cmd[1:]],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log.close()

    def _check_alive(self, name: str) -> None:
        p = self.procs[name]
        if p.poll() is not None:
            text = "".join(f.read_text(errors="replace") for f in (self._out(name), self.log(name)) if f.exists())
            tail = text.strip().splitlines()[-5:]
            raise ClusterUnavailable(f"{name} exited with status {p.returncode}: " + " | ".join(tail))

    def _wait_port(self, name: str, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive(name)
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.2)
        raise ClusterUnavailable(f"{name} did not listen on port {port} within {timeout:.0f} s (see {self.log(name)})")

    def _wait_node_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            self._check_alive("slurmd")
            state = self._run(["sinfo", "-h", "-N", "-o", "%T", "-n", self.node], check=False).strip()
            if state.split("\n")[0] == "idle":
                return
            time.sleep(0.3)
        raise ClusterUnavailable(f"node {self.node} is {state or 'unknown'}, not idle (see {self.log('slurmd')})")

    def _start_munge(self) -> None:
        key = self.base / "munge" / "munge.key"
        if not key.exists():
            self._run(["mungekey", "--create", "--keyfile", str(key)])
        key.chmod(0o600)
        (self.base / "munge").chmod(0o700)
        self._daemon(
            "munged",
            [
                "munged",
                "--foreground",
                "--force",
                f"--socket={self.munge_socket}",
                f"--key-file={key}",
                f"--log-file={self.log('munged')}",
                f"--pid-file={self.base / 'run' / 'munged.pid'}",
                f"--seed-file={self.base / 'munge' / 'munged.seed'}",
            ],
        )
        deadline = time.monotonic() + 20
        while not self.munge_socket.exists():
            self._check_alive("munged")
            if time.monotonic() > deadline:
                raise ClusterUnavailable(f"munged made no socket (see {self.log('munged')})")
            time.sleep(0.1)

    def _start_mariadb(self, timeout: float) -> None:
        data = self.base / "db" / "data"
        sock = self.base / "db" / "mysqld.sock"
        if not (data / "mysql").is_dir():
            self._run(
                [
                    "mariadb-install-db",
                    "--no-defaults",
                    f"--datadir={data}",
                    "--user=root",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                ],
                timeout=120,
            )
        self._daemon(
            "mariadbd",
            [
                "mariadbd",
                "--no-defaults",
                f"--datadir={data}",
                f"--socket={sock}",
                f"--port={self.ports['mariadb']}",
                "--bind-address=127.0.0.1",
                "--user=root",
                f"--pid-file={self.base / 'run' / 'mariadbd.pid'}",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=128M",
                "--innodb-lock-wait-timeout=900",
                "--innodb-log-file-size=64M",
            ],
        )
        self._wait_port("mariadbd", self.ports["mariadb"], timeout)
        sql = (
            "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'reglab';"
            "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
        )
        self._run(["mariadb", "--no-defaults", f"--socket={sock}", "-u", "root", "-e", sql])

    def _write_configs(self) -> None:
        b, p = self.base, self.ports
        auth = f"AuthType=auth/munge\nAuthInfo=socket={self.munge_socket}\n"
        # a requeued job waits cred_expire + 1 s before it may start again (120 s by default)
        ctl_auth = f"AuthType=auth/munge\nAuthInfo=cred_expire={REQUEUE_DELAY_S - 1},socket={self.munge_socket}\n"
        dbd = b / "etc" / "slurmdbd.conf"
        dbd.write_text(
            auth + f"DbdHost=localhost\nDbdAddr=127.0.0.1\nDbdPort={p['slurmdbd']}\nSlurmUser=root\n"
            f"LogFile={self.log('slurmdbd')}\nPidFile={b / 'run' / 'slurmdbd.pid'}\n"
            "StorageType=accounting_storage/mysql\nStorageHost=127.0.0.1\n"
            f"StoragePort={p['mariadb']}\nStorageUser=slurm\nStoragePass=reglab\nStorageLoc=slurm_acct_db\n"
        )
        dbd.chmod(0o600)
        self.conf.write_text(
            ctl_auth
            + f"""ClusterName=reglab
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={p["slurmctld"]}
SlurmdPort={p["slurmd"]}
SlurmUser=root
SlurmdUser=root
CredType=cred/munge
StateSaveLocation={b / "ctld"}
SlurmdSpoolDir={b / "spool" / "%n"}
SlurmctldPidFile={b / "run" / "slurmctld.pid"}
SlurmdPidFile={b / "run" / "slurmd.pid"}
SlurmctldLogFile={self.log("slurmctld")}
SlurmdLogFile={self.log("slurmd")}
SlurmctldDebug=info
SlurmdDebug=info
{f"DebugFlags={self.debug_flags}" if self.debug_flags else ""}
# no cgroups: containers rarely have a writable hierarchy
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
MpiDefault=none
SwitchType=switch/none
LaunchParameters=use_interactive_step
SlurmdParameters=config_overrides
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2,defer_batch
ReturnToService=2
# accounting through slurmdbd, so sacct works as on real clusters
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={p["slurmdbd"]}
AccountingStoragePass={self.munge_socket}
AccountingStorageEnforce=associations,qos
JobCompType=jobcomp/none
# short timeouts: a test cluster, not a production one
KillWait=5
MinJobAge=600
MessageTimeout=20
SlurmdTimeout=60
InactiveLimit=0
Waittime=0
# jobs in `high` preempt jobs in `low`, which are requeued
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={CPUS} RealMemory=4000 State=UNKNOWN
PartitionName=low Nodes={self.node} Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE
PartitionName=high Nodes={self.node} MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
"""
        )


def main(argv: list[str]) -> int:
    import tempfile

    base = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="reglab-slurm-"))
    why = why_unavailable()
    if why:
        print(f"cannot start a SLURM cluster here: {why}", file=sys.stderr)
        return 2
    cluster = SlurmCluster(base)
    try:
        cluster.start()
    except ClusterUnavailable as e:
        print(f"cannot start a SLURM cluster here: {e}", file=sys.stderr)
        return 1
    print(f"SLURM cluster up under {base} (partitions: low (default), high; logs in {base / 'log'})")
    print(f"export SLURM_CONF={cluster.conf}")
    print("Ctrl-C stops it (cancels every job, stops every daemon).", flush=True)
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
