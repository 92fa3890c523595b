"""A one-node SLURM cluster on this machine (root), to try or test `hydra/launcher=slurm`.

    python scripts/slurm_cluster.py start [--dir DIR]   # installs Slurm if missing (apt-get)
    eval "$(python scripts/slurm_cluster.py env)"       # SLURM_CONF for sbatch/squeue/sacct
    python scripts/slurm_cluster.py status
    python scripts/slurm_cluster.py stop                # cancels the jobs, stops the daemons

Everything lives in one folder (default /tmp/facecure-slurm): configs, munge key, MariaDB data,
Slurm state, logs (DIR/log) and cluster.json (ports and the PIDs of the daemons started here).
Nothing is written to /etc and no system service is started; clients find the cluster through
SLURM_CONF=DIR/slurm.conf. The daemons run as plain background processes:

    munged -F        authentication (its own key and socket)
    mariadbd         accounting database, on 127.0.0.1 only
    slurmdbd -D      accounting daemon (so `sacct` works and submitit sees a job that died hard)
    slurmctld -D     controller
    slurmd -D        the one node, this machine as `slurmd -C` describes it

From Python (tests/test_slurm.py): `cluster = start(path)`, then `cluster.env`, `cluster.stop()`.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_DIR = Path(tempfile.gettempdir()) / "facecure-slurm"
INSTALL_SCRIPT = Path(__file__).resolve().parent / "install_slurm.sh"
PROGRAMS = ("munged", "mariadbd", "mariadb-install-db", "mariadb", "slurmdbd", "slurmctld",
            "slurmd", "sbatch", "squeue", "sinfo", "sacct", "scancel")
SBIN = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")
STOP_ORDER = ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged")
CLUSTER_NAME = "facecure"


class ClusterError(RuntimeError):
    pass


def which(program: str) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN])
    return shutil.which(program, path=path)


def missing_programs() -> list[str]:
    return [p for p in PROGRAMS if which(p) is None]


def install() -> None:
    """Install the packages (scripts/install_slurm.sh) when a program is missing."""
    if not missing_programs():
        return
    if os.geteuid() != 0:
        raise ClusterError(f"Slurm is not installed and installing needs root: sudo {INSTALL_SCRIPT}")
    done = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True)
    if done.returncode != 0 or missing_programs():
        raise ClusterError(f"{INSTALL_SCRIPT} failed (missing: {missing_programs()}):\n"
                           f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(what: str, check, timeout: float, log: Path | None = None, proc=None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.1)
    tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    state = f"exited with {proc.returncode}" if proc is not None and proc.poll() is not None \
        else f"not ready after {timeout:.0f} s"
    raise ClusterError(f"{what} {state}; log {log}:\n{tail}")


def node_line() -> tuple[str, int, int]:
    """`slurmd -C`'s node line (this machine's CPUs, sockets, memory): (line, cpus, memory MB)."""
    out = subprocess.run([which("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
    line = out.splitlines()[0].strip()
    fields = dict(kv.split("=", 1) for kv in line.split())
    return line, int(fields["CPUs"]), int(fields["RealMemory"])


@dataclass
class Cluster:
    root: Path
    ports: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    node: str = ""
    created_root: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    # -- paths and environment ---------------------------------------------------------------
    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge" / "munge.socket"

    @property
    def env(self) -> dict[str, str]:
        """os.environ plus SLURM_CONF (and sbin on PATH): for sbatch, squeue, sacct, facecure."""
        path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
        # Inside a job of another cluster, its SLURM_* variables would mislead sbatch/submitit.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_"))}
        return {**env, "SLURM_CONF": str(self.conf), "PATH": path}

    def client(self, *args: str, check: bool = True, timeout: float = 30) -> str:
        done = subprocess.run([which(args[0]) or args[0], *args[1:]], env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise ClusterError(f"{' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def save(self) -> None:
        state = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
        (self.root / "cluster.json").write_text(json.dumps(state, indent=1))

    @classmethod
    def load(cls, root: Path) -> Cluster:
        state = json.loads((Path(root) / "cluster.json").read_text())
        state["root"] = Path(state["root"])
        return cls(**state)

    def _spawn(self, name: str, cmd: list[str], env: dict | None = None) -> subprocess.Popen:
        log = open(self.root / "log" / f"{name}.out", "ab")
        # A session of its own: a Ctrl-C in the terminal that started it does not reach it.
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env or self.env, start_new_session=True, cwd=self.root)
        log.close()
        self.pids[name] = proc.pid
        self.save()
        return proc

    # -- start -------------------------------------------------------------------------------
    def start(self, timeout: float = 60) -> Cluster:
        started = time.time()
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        for sub in ("munge", "mysql", "state", "spool", "log"):
            (self.root / sub).mkdir(exist_ok=True)
        os.chmod(self.root / "munge", 0o755)  # munged wants its socket folder 755
        self.ports = {"mysql": free_port(), "slurmdbd": free_port(), "slurmctld": free_port(),
                      "slurmd": free_port()}
        try:
            self._start_munge(timeout)
            self._start_mariadb(timeout)
            self._write_configs()
            self._start_slurm(timeout)
        except BaseException:
            self.stop(remove=False)
            raise
        self.timings["start_s"] = round(time.time() - started, 2)
        self.save()
        return self

    def _start_munge(self, timeout: float) -> None:
        key = self.root / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o600)
        proc = self._spawn("munged", [
            which("munged"), "-F", f"--socket={self.munge_socket}", f"--key-file={key}",
            f"--pid-file={self.root / 'munge' / 'munged.pid'}",
            f"--log-file={self.root / 'log' / 'munged.log'}",
            f"--seed-file={self.root / 'munge' / 'munged.seed'}"])
        wait_for("munged", self.munge_socket.exists, timeout, self.root / "log" / "munged.out", proc)

    def _start_mariadb(self, timeout: float) -> None:
        t = time.time()
        data, sock = self.root / "mysql" / "data", self.root / "mysql" / "mysqld.sock"
        if not (data / "mysql").exists():
            done = subprocess.run(
                [which("mariadb-install-db"), "--no-defaults", f"--datadir={data}", "--user=root",
                 "--auth-root-authentication-method=normal", "--skip-test-db",
                 "--skip-name-resolve"], capture_output=True, text=True, timeout=timeout)
            if done.returncode != 0:
                raise ClusterError(f"mariadb-install-db failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        proc = self._spawn("mariadbd", [
            which("mariadbd"), "--no-defaults", f"--datadir={data}", f"--socket={sock}",
            f"--port={self.ports['mysql']}", "--bind-address=127.0.0.1", "--user=root",
            f"--pid-file={self.root / 'mysql' / 'mariadbd.pid'}",
            f"--log-error={self.root / 'log' / 'mariadbd.log'}", "--skip-name-resolve",
            "--skip-log-bin", "--innodb-buffer-pool-size=64M", "--innodb-lock-wait-timeout=900"])
        wait_for("mariadbd", lambda: sock.exists() and port_open(self.ports["mysql"]), timeout,
                 self.root / "log" / "mariadbd.log", proc)
        sql = ("CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm'; "
               "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';")
        subprocess.run([which("mariadb"), "--no-defaults", f"--socket={sock}", "-uroot", "-e", sql],
                       check=True, capture_output=True, timeout=timeout)
        self.timings["mariadb_s"] = round(time.time() - t, 2)

    def _write_configs(self) -> None:
        line, cpus, memory = node_line()
        self.node = line.split()[0].split("=", 1)[1]
        (self.root / "spool" / self.node).mkdir(parents=True, exist_ok=True)
        host = socket.gethostname().split(".")[0]
        auth = f"AuthType=auth/munge\nAuthInfo=socket={self.munge_socket}\n"
        r = self.root
        self.conf.write_text(f"""\
# A one-node cluster written by scripts/slurm_cluster.py; everything under {r}
ClusterName={CLUSTER_NAME}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={self.ports['slurmctld']}
SlurmdPort={self.ports['slurmd']}
SlurmUser=root
SlurmdUser=root
{auth}CredType=cred/munge
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/%n
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU={memory // cpus}
SchedulerType=sched/backfill
ReturnToService=2
KillWait=5
InactiveLimit=0
MinJobAge=300
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={self.ports['slurmdbd']}
AccountingStoragePass={self.munge_socket}
JobCompType=jobcomp/none
{line} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
        dbd = r / "slurmdbd.conf"  # slurmdbd reads it next to $SLURM_CONF
        dbd.write_text(f"""\
{auth}DbdHost={host}
DbdAddr=127.0.0.1
DbdPort={self.ports['slurmdbd']}
SlurmUser=root
PidFile={r}/slurmdbd.pid
LogFile={r}/log/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={self.ports['mysql']}
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
""")
        os.chmod(dbd, 0o600)

    def _start_slurm(self, timeout: float) -> None:
        t = time.time()
        log = self.root / "log"
        proc = self._spawn("slurmdbd", [which("slurmdbd"), "-D"])
        wait_for("slurmdbd", lambda: port_open(self.ports["slurmdbd"]), timeout,
                 log / "slurmdbd.log", proc)
        self.timings["slurmdbd_s"] = round(time.time() - t, 2)
        proc = self._spawn("slurmctld", [which("slurmctld"), "-D", "-f", str(self.conf)])
        wait_for("slurmctld", lambda: port_open(self.ports["slurmctld"]), timeout,
                 log / "slurmctld.log", proc)
        proc = self._spawn("slurmd", [which("slurmd"), "-D", "-f", str(self.conf), "-N", self.node])
        wait_for("the node", self.node_idle, timeout, log / "slurmd.log", proc)
        # The controller registers the cluster in the accounting database on its own.
        wait_for("the cluster's registration in slurmdbd",
                 lambda: CLUSTER_NAME in self.client("sacctmgr", "-n", "-P", "show", "cluster",
                                                     "format=cluster", check=False),
                 timeout, log / "slurmctld.log")

    def node_idle(self) -> bool:
        out = self.client("sinfo", "-h", "-N", "-o", "%T", check=False)
        return out.strip() == "idle"

    # -- jobs --------------------------------------------------------------------------------
    def jobs(self) -> list[str]:
        """Job ids the controller still has pending or running."""
        return self.client("squeue", "-h", "-o", "%i", check=False).split()

    def wait_jobs(self, timeout: float) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.jobs():
                return True
            time.sleep(0.5)
        return False

    def job_states(self) -> dict[str, str]:
        """sacct's view: job id -> state (COMPLETED, FAILED, CANCELLED, TIMEOUT, ...)."""
        out = self.client("sacct", "-n", "-X", "-P", "-o", "JobID,State")
        return dict(line.split("|", 1) for line in out.splitlines() if line)

    # -- stop --------------------------------------------------------------------------------
    def stop(self, remove: bool = False, timeout: float = 15) -> None:
        """Cancel the jobs, then stop each daemon started here by its PID (TERM, then KILL)."""
        if self.pids.get("slurmctld") and alive(self.pids["slurmctld"]):
            try:
                ids = self.jobs()
                if ids:
                    self.client("scancel", *ids, check=False)
                    self.wait_jobs(timeout)
            except (ClusterError, subprocess.TimeoutExpired, OSError):
                pass  # best effort: the daemons are stopped by PID next anyway
        for name in STOP_ORDER:
            pid = self.pids.get(name)
            if pid:
                terminate(pid, timeout)
        self.pids = {}
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)
        elif self.root.exists():
            self.save()


def alive(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)  # reap it when it is our child
        if finished == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of another parent
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def terminate(pid: int, timeout: float) -> None:
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
        if not alive(pid):
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.time() + wait
        while time.time() < deadline and alive(pid):
            time.sleep(0.1)


def start(root: Path | str | None = None, timeout: float = 60) -> Cluster:
    """Install Slurm if missing and start a cluster in `root` (a new temporary folder if None)."""
    if os.geteuid() != 0:
        raise ClusterError("the local cluster runs its daemons as root: run as root")
    install()
    created = root is None
    root = Path(tempfile.mkdtemp(prefix="facecure-slurm-")) if root is None else Path(root)
    if (root / "cluster.json").exists():
        old = Cluster.load(root)
        if any(alive(p) for p in old.pids.values()):
            raise ClusterError(f"a cluster already runs from {root} (stop it first)")
    return Cluster(root=root, created_root=created).start(timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["install", "start", "stop", "status", "env"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR,
                        help=f"the cluster's folder (default {DEFAULT_DIR})")
    parser.add_argument("--keep", action="store_true", help="stop: keep the folder (logs)")
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            install()
            print("installed:", ", ".join(which(p) for p in PROGRAMS))
        elif args.command == "start":
            cluster = start(args.dir)
            print(f"cluster up in {cluster.timings['start_s']} s (node {cluster.node}, "
                  f"logs in {cluster.root / 'log'}); for sbatch/squeue/sacct and facecure:")
            print(f"export SLURM_CONF={cluster.conf}")
        elif args.command == "env":
            print(f"export SLURM_CONF={Cluster.load(args.dir).conf}")
        elif args.command == "status":
            cluster = Cluster.load(args.dir)
            for name, pid in cluster.pids.items():
                print(f"{name:10s} pid {pid:7d} {'running' if alive(pid) else 'NOT running'}")
            if cluster.pids.get("slurmctld") and alive(cluster.pids["slurmctld"]):
                print(cluster.client("sinfo", check=False), end="")
                print(cluster.client("squeue", check=False), end="")
        elif args.command == "stop":
            if not (args.dir / "cluster.json").exists():
                print(f"no cluster in {args.dir}")
                return 0
            Cluster.load(args.dir).stop(remove=not args.keep)
            print("stopped" + (f"; logs kept in {args.dir / 'log'}" if args.keep else ""))
    except ClusterError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
