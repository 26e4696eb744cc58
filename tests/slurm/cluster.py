"""A real single-node SLURM on this machine, for testing the slurm profile end to end.

    python tests/slurm/cluster.py start    # install (apt) if needed, configure, start, wait idle
    python tests/slurm/cluster.py status   # exit 0 when the node is up and idle
    python tests/slurm/cluster.py stop     # cancel jobs, stop the daemons, remove the state

It installs Debian's `slurm-wlm` and `munge` when missing, writes a slurm.conf for THIS
machine (one node, its CPUs and memory, no GPUs, no cgroups, no accounting database, finished
jobs kept visible to squeue/scontrol for an hour), starts munged, slurmctld and slurmd as
daemons and waits, bounded, until `sinfo` shows the node idle. Clients find the config
through SLURM_CONF (printed by `start` and `env`); /etc/slurm/slurm.conf is linked to it only
when that path is free, so a real cluster's config is never touched. Needs root. Every wait
is bounded; a failure exits 1 with the reason and the daemon log's tail.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(os.environ.get("LEAD_SLURM_ROOT", "/var/lib/lead-slurm-test"))
CONF = ROOT / "slurm.conf"
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_RUN = Path("/run/munge")
MARKER = "# written by tests/slurm/cluster.py"
PARTITION = "debug"
PACKAGES = ("slurm-wlm", "munge")
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "srun")
MEMORY_MARGIN_MB = 1024
DEFAULT_TIMEOUT_S = 90.0


class ClusterError(RuntimeError):
    """The test cluster could not be installed, started or reached; the message says why."""


@dataclass(frozen=True)
class Node:
    """What the single node offers: read from the machine, written into slurm.conf."""

    name: str
    cpus: int
    memory_mb: int


def run(cmd: list[str], timeout: float = 30.0, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command with a bound on its time, with SLURM_CONF pointing at the test config."""
    env = {**os.environ, "SLURM_CONF": str(CONF)}
    try:
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as err:
        raise ClusterError(f"`{' '.join(cmd)}` did not finish within {timeout:.0f} s") from err
    except FileNotFoundError as err:
        raise ClusterError(f"`{cmd[0]}` is not installed") from err
    if check and result.returncode != 0:
        output = (result.stderr or result.stdout).strip()
        raise ClusterError(f"`{' '.join(cmd)}` failed (exit {result.returncode}): {output}")
    return result


def require_root() -> None:
    if os.geteuid() != 0:
        raise ClusterError(
            "the test cluster needs root (it installs packages and runs slurmctld/slurmd); "
            "run as root, e.g. in CI"
        )


def install_packages(timeout: float = 900.0) -> None:
    """apt-get install slurm-wlm and munge unless every binary the tests use is there."""
    if all(shutil.which(binary) for binary in BINARIES):
        return
    if not shutil.which("apt-get"):
        raise ClusterError(f"SLURM is not installed and there is no apt-get to install {PACKAGES}")
    os.environ.setdefault("DEBIAN_FRONTEND", "noninteractive")
    run(["apt-get", "update", "-q"], timeout=timeout)
    run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES],
        timeout=timeout,
    )
    missing = [binary for binary in BINARIES if not shutil.which(binary)]
    if missing:
        raise ClusterError(f"apt-get installed {PACKAGES} but these are still missing: {missing}")


def this_node() -> Node:
    """This machine as one SLURM node: the CPUs we may use and its memory less a margin."""
    total_mb = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    return Node(
        name=socket.gethostname().split(".")[0],
        cpus=len(os.sched_getaffinity(0)),
        memory_mb=max(512, total_mb - MEMORY_MARGIN_MB),
    )


def slurm_conf(node: Node) -> str:
    """A single-node slurm.conf: no cgroups (containers), no GPUs, no accounting database.

    cons_tres with CR_Core_Memory packs several 1-CPU jobs side by side; MinJobAge keeps
    finished jobs in slurmctld for an hour so squeue/scontrol (not sacct) report their end
    state; config_overrides stops slurmd draining the node when the machine reports a
    different topology than the one written here; batch_sched_delay=0 starts a job when it is
    submitted instead of up to 3 s later (a chain of short jobs pays that at every step);
    sched_interval=2 and bf_interval=2 retry pending jobs every 2 s instead of every 60 and
    30 s, so a job whose submission-time pass missed the node (a controller that has just
    started, a busy machine) does not wait a minute for the next one.
    """
    return f"""{MARKER}: a single-node test cluster; `stop` removes it.
ClusterName=leadtest
SlurmctldHost={node.name}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation={ROOT}/state
SlurmdSpoolDir={ROOT}/spool
SlurmctldPidFile={ROOT}/slurmctld.pid
SlurmdPidFile={ROOT}/slurmd.pid
SlurmctldLogFile={ROOT}/log/slurmctld.log
SlurmdLogFile={ROOT}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=3600
DefMemPerCPU=512
InactiveLimit=0
KillWait=5
Waittime=0
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName={node.name} NodeAddr=127.0.0.1 CPUs={node.cpus} Sockets=1 CoresPerSocket={node.cpus} \
ThreadsPerCore=1 RealMemory={node.memory_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes={node.name} Default=YES MaxTime=INFINITE State=UP
"""


def write_config(node: Node) -> None:
    for sub in ("state", "spool", "log"):
        (ROOT / sub).mkdir(parents=True, exist_ok=True)
    CONF.write_text(slurm_conf(node))
    if not SYSTEM_CONF.exists() and not SYSTEM_CONF.is_symlink():
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SYSTEM_CONF.symlink_to(CONF)


def pid_alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text().split()[0]), 0)
    except (FileNotFoundError, ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def start_munge() -> None:
    """munged as the munge user (it refuses a key it does not own); reuses a running one."""
    if not MUNGE_KEY.exists():
        run(["mungekey", "--create", "--keyfile", str(MUNGE_KEY)])
        shutil.chown(MUNGE_KEY, "munge", "munge")
        MUNGE_KEY.chmod(0o400)
    if not pid_alive(MUNGE_RUN / "munged.pid"):
        MUNGE_RUN.mkdir(parents=True, exist_ok=True)
        shutil.chown(MUNGE_RUN, "munge", "munge")
        run(["runuser", "-u", "munge", "--", "munged"])
    credential = run(["munge", "-n"]).stdout
    env = {**os.environ, "SLURM_CONF": str(CONF)}
    check = subprocess.run(
        ["unmunge"], input=credential, capture_output=True, text=True, timeout=10, env=env
    )
    if check.returncode != 0:
        raise ClusterError(f"munge does not round-trip a credential: {check.stderr.strip()}")


def start_daemons() -> None:
    if not pid_alive(ROOT / "slurmctld.pid"):
        run(["slurmctld", "-f", str(CONF)])
    if not pid_alive(ROOT / "slurmd.pid"):
        run(["slurmd", "-f", str(CONF)])


def node_state(node: Node) -> str:
    """The node's state as sinfo prints it (`idle`, `mix`, `down*`, ...) or '' when unknown."""
    result = run(["sinfo", "-h", "-N", "-n", node.name, "-o", "%t"], timeout=10, check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


def wait_idle(node: Node, timeout: float) -> None:
    """Poll sinfo until the node is usable; resume it once if it came up drained or down."""
    deadline = time.monotonic() + timeout
    resumed = False
    state = ""
    while time.monotonic() < deadline:
        state = node_state(node)
        if state in ("idle", "mix", "alloc"):
            return
        if state.rstrip("*~#") in ("drain", "drng", "down") and not resumed:
            run(["scontrol", "update", f"nodename={node.name}", "state=resume"], check=False)
            resumed = True
        time.sleep(0.5)
    raise ClusterError(
        f"node {node.name} is not idle after {timeout:.0f} s (sinfo state: {state or 'none'})\n"
        + log_tails()
    )


def log_tails(lines: int = 15) -> str:
    tails = []
    for log in sorted((ROOT / "log").glob("*.log")):
        text = log.read_text(errors="replace").splitlines()[-lines:]
        tails.append(f"--- {log} (last {lines} lines)\n" + "\n".join(text))
    return "\n".join(tails)


def start(timeout: float = DEFAULT_TIMEOUT_S) -> Node:
    """Install, configure and start the cluster (idempotent); returns the node it serves."""
    require_root()
    install_packages()
    node = this_node()
    if not (CONF.exists() and CONF.read_text() == slurm_conf(node)):
        stop()
        write_config(node)
    start_munge()
    start_daemons()
    wait_idle(node, timeout)
    return node


def stop_daemon(pid_file: Path, timeout: float = 15.0) -> None:
    """SIGTERM the daemon named by pid_file, SIGKILL it if it outlives the timeout."""
    if not pid_alive(pid_file):
        return
    pid = int(pid_file.read_text().split()[0])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


def stop() -> None:
    """Cancel the cluster's jobs, stop slurmd and slurmctld, remove their state and config.

    munged stays up: it is a system service other software may share, and harmless idle.
    """
    require_root()
    if pid_alive(ROOT / "slurmctld.pid"):
        run(["scancel", "--full", "--user", "root"], timeout=15, check=False)
    stop_daemon(ROOT / "slurmd.pid")
    stop_daemon(ROOT / "slurmctld.pid")
    if SYSTEM_CONF.is_symlink() and SYSTEM_CONF.resolve() == CONF.resolve():
        SYSTEM_CONF.unlink()
    shutil.rmtree(ROOT, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status", "env"])
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help="seconds to wait for the node to become idle (start)")
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            node = start(args.timeout)
            print(f"SLURM up: node {node.name}, {node.cpus} CPUs, {node.memory_mb} MB, "
                  f"partition {PARTITION}", file=sys.stderr)
            print(f"export SLURM_CONF={CONF}")
        elif args.command == "stop":
            stop()
        elif args.command == "status":
            state = node_state(this_node()) if CONF.exists() else ""
            print(state or "not running")
            return 0 if state in ("idle", "mix", "alloc") else 1
        else:
            print(f"export SLURM_CONF={CONF}")
    except ClusterError as err:
        print(f"cluster.py {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
