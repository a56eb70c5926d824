"""A private single-node SLURM cluster on localhost: munge, slurmctld and slurmd, all inside one folder.

Debian's ``slurm-wlm`` (22.05) and ``munge`` packages are installed with ``apt-get`` when missing (as root). The
configuration, munge key and socket, daemon state, logs and the job-completion record all live in the folder, and
the daemons listen on free ports, so the cluster leaves any SLURM or munge of the host alone. Clients find it
through ``SLURM_CONF`` (:attr:`LocalSlurm.env`); jobs inherit it, so the ``srun`` inside a job does too.

There is no slurmdbd: the executor plugin reads job states with ``squeue``, and :meth:`LocalSlurm.jobs` with
``scontrol``; ``MinJobAge`` keeps finished jobs visible to both for an hour.

By hand, from the repository root (as root)::

    python -m tests.slurm.cluster /tmp/slurm -- snakemake --workflow-profile workflow/profiles/slurm \\
        --slurm-status-command squeue
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
TOOLS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scancel", "scontrol")
NODE = "localhost"
CLUSTER = "statcell"
MIN_JOB_AGE_S = 3600  # finished jobs stay visible to squeue and scontrol this long


class SlurmUnavailable(RuntimeError):
    """SLURM cannot be installed or started here; the message says why."""


@dataclass(frozen=True)
class NodeSize:
    """What the one node offers the scheduler (declared, so jobs sized for a real node still fit)."""

    cpus: int
    memory_mb: int
    gpus: int


@dataclass(frozen=True)
class LocalSlurm:
    """A running cluster: its folder and the environment its clients need."""

    folder: Path
    env: dict[str, str]
    node: NodeSize

    def jobs(self) -> dict[str, dict[str, str]]:
        """Every job of the last hour by id: ``scontrol show job`` fields (``JobState``, ``ExitCode``, ``NumCPUs``,
        ``TRES``, ``TresPerJob``, ``Comment``, ``JobName``, ...)."""
        listing = self.run(["scontrol", "--oneliner", "show", "job"], timeout=30, check=True).stdout
        records = [parse_fields(line) for line in listing.splitlines() if line.startswith("JobId=")]
        return {record["JobId"]: record for record in records}

    def run(self, command: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
        """Run a SLURM client (``squeue``, ``sbatch``, ...) against this cluster."""
        return subprocess.run(list(command), env=self.env, capture_output=True, text=True, **kwargs)


def parse_fields(line: str) -> dict[str, str]:
    """The ``key=value`` fields of one line of ``scontrol --oneliner`` output.

    >>> parse_fields("JobId=3 JobName=run-1 UserId=root(0) JobState=FAILED Reason=NonZeroExitCode ExitCode=1:0")
    {'JobId': '3', 'JobName': 'run-1', 'UserId': 'root(0)', 'JobState': 'FAILED', 'Reason': 'NonZeroExitCode', 'ExitCode': '1:0'}
    """
    return dict(re.findall(r"(\w+)=(\S*)", line))


def slurm_conf(folder: Path, *, ports: tuple[int, int], node: NodeSize) -> str:
    """``slurm.conf`` of a one-node cluster whose files all live in ``folder``.

    Cores and memory are consumable (``cons_tres``, ``CR_Core_Memory``, a ``DefMemPerCPU``, else every job would
    take the whole node's memory); ``linuxproc`` process tracking and no task plugin need no cgroups; the node's
    GPUs are stand-ins (:func:`gres_conf`), so ``--gpus`` requests are scheduled on a machine without one.
    """
    controller_port, node_port = ports
    return "\n".join([
        f"ClusterName={CLUSTER}",
        f"SlurmctldHost={NODE}(127.0.0.1)",
        f"SlurmctldPort={controller_port}",
        f"SlurmdPort={node_port}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={folder / 'munge.socket'}",
        f"StateSaveLocation={folder / 'state'}",
        f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
        f"SlurmdPidFile={folder / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'slurmctld.log'}",
        f"SlurmdLogFile={folder / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "MpiDefault=none",
        "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        f"DefMemPerCPU={max(node.memory_mb // node.cpus, 100)}",
        f"MinJobAge={MIN_JOB_AGE_S}",
        "ReturnToService=2",
        "SlurmdParameters=config_overrides",
        "AccountingStorageType=accounting_storage/none",
        "GresTypes=gpu",
        f"NodeName={NODE} NodeAddr=127.0.0.1 CPUs={node.cpus} RealMemory={node.memory_mb} "
        f"Gres=gpu:{node.gpus} State=UNKNOWN",
        f"PartitionName=debug Nodes={NODE} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def gres_conf(gpus: int) -> str:
    """``gres.conf`` with ``gpus`` stand-in GPUs.

    slurmd drops a GPU that has no device file, so each is given a harmless character device (``/dev/null``,
    ``/dev/zero``, ...): with ``task/none`` nothing restricts or touches them; jobs only get scheduled.

    >>> print(gres_conf(2), end="")
    NodeName=localhost Name=gpu File=/dev/null
    NodeName=localhost Name=gpu File=/dev/zero
    """
    devices = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
    if not 0 <= gpus <= len(devices):
        raise ValueError(f"between 0 and {len(devices)} stand-in GPUs, not {gpus}")
    return "".join(f"NodeName={NODE} Name=gpu File={device}\n" for device in devices[:gpus])


def ensure_installed(*, timeout_s: float = 600) -> None:
    """Install Debian's SLURM and munge with ``apt-get`` if any of :data:`TOOLS` is missing.

    Raises
    ------
    SlurmUnavailable
        Not root, no ``apt-get``, or the install failed (the message holds apt's last words).
    """
    if not _missing_tools():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SlurmUnavailable(f"{', '.join(_missing_tools())} missing, and no apt-get as root to install "
                               f"{' '.join(PACKAGES)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
    failure = ""
    for commands in ([install], [["apt-get", "update"], install]):
        for command in commands:
            try:
                done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
            except subprocess.TimeoutExpired:
                raise SlurmUnavailable(f"{' '.join(command)} took over {timeout_s:.0f} s") from None
            if done.returncode != 0:
                failure = f"{' '.join(command)}: {(done.stderr or done.stdout).strip()[-400:]}"
                break
        else:
            if not _missing_tools():
                return
            failure = f"installed {' '.join(PACKAGES)} but still missing {', '.join(_missing_tools())}"
    raise SlurmUnavailable(failure)


def _missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def _free_ports(count: int) -> tuple[int, ...]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return tuple(sock.getsockname()[1] for sock in sockets)
    finally:
        for sock in sockets:
            sock.close()


def _tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


@contextlib.contextmanager
def local_slurm(folder: Path, *, node: NodeSize, start_timeout_s: float = 60) -> Iterator[LocalSlurm]:
    """Install if needed, start munged, slurmctld and slurmd in ``folder``, and stop them all on exit.

    On exit (also after an error) every job still queued or running is cancelled before the daemons stop.

    Raises
    ------
    SlurmUnavailable
        SLURM could not be installed, or the node did not come up within ``start_timeout_s`` (the message holds
        the daemons' last log lines).
    """
    ensure_installed()
    folder = Path(folder).resolve()
    for sub in ("state", "spool"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    conf = folder / "slurm.conf"
    conf.write_text(slurm_conf(folder, ports=_free_ports(2), node=node))
    (folder / "gres.conf").write_text(gres_conf(node.gpus))
    key = folder / "munge.key"
    subprocess.run(["mungekey", "--create", f"--keyfile={key}", "--force"], check=True, capture_output=True)
    key.chmod(0o400)
    # Clients and jobs (sbatch --export=ALL) find the cluster through SLURM_CONF; `python` is this interpreter's.
    # Snakemake's job step drops SLURM_* variables before its `srun`, so an `srun` shim first on PATH sets it again.
    shims = folder / "bin"
    shims.mkdir(exist_ok=True)
    srun = shims / "srun"
    srun.write_text(f'#!/bin/sh\nSLURM_CONF={conf} exec {shutil.which("srun")} "$@"\n')
    srun.chmod(0o755)
    path = os.pathsep.join([str(shims), str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "SLURM_CONF": str(conf), "PATH": path}
    cluster = LocalSlurm(folder=folder, env=env, node=node)
    daemons: list[subprocess.Popen] = []
    try:
        for command in (
            ["munged", "--foreground", "--force", f"--socket={folder / 'munge.socket'}", f"--key-file={key}",
             f"--pid-file={folder / 'munged.pid'}", f"--log-file={folder / 'munged.log'}",
             f"--seed-file={folder / 'munged.seed'}"],
            ["slurmctld", "-D", "-i", "-f", str(conf)],
            ["slurmd", "-D", "-N", NODE, "-f", str(conf)],
        ):
            with open(folder / f"{command[0]}.out", "w") as out:
                daemons.append(subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                                start_new_session=True))
            if command[0] == "munged":
                _wait_for(lambda: (folder / "munge.socket").exists(), "munged's socket", folder=folder,
                          daemons=daemons, timeout_s=start_timeout_s)
        _wait_for(lambda: cluster.run(["sinfo", "-h", "-o", "%T"], timeout=10).stdout.strip() == "idle",
                  "an idle node", folder=folder, daemons=daemons, timeout_s=start_timeout_s)
        yield cluster
    finally:
        if daemons:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                cluster.run(["scancel", "--full", "--user", "root"], timeout=10)
                _wait_for(lambda: not cluster.run(["squeue", "-h", "-t", "PD,R,CG"], timeout=10).stdout.strip(),
                          "the end of cancelled jobs", folder=folder, daemons=daemons, timeout_s=15)
        for daemon in reversed(daemons):
            _stop(daemon)


def _wait_for(ready, what: str, *, folder: Path, daemons: Sequence[subprocess.Popen], timeout_s: float) -> None:
    """Poll ``ready()`` until true; give up, with the daemons' logs, on time out or when a daemon has exited."""
    deadline = time.monotonic() + timeout_s
    problem = f"no {what} after {timeout_s:.0f} s"
    while time.monotonic() < deadline:
        with contextlib.suppress(subprocess.SubprocessError):
            if ready():
                return
        exited = [daemon.args[0] for daemon in daemons if daemon.poll() is not None]
        if exited:
            problem = f"{', '.join(exited)} exited while waiting for {what}"
            break
        time.sleep(0.5)
    logs = "\n".join(f"--- {name}\n{_tail(folder / name)}" for name in
                     ("munged.out", "slurmctld.log", "slurmd.log"))
    raise SlurmUnavailable(f"{problem}\n{logs}")


def _stop(daemon: subprocess.Popen, timeout_s: float = 10) -> None:
    """Stop one daemon we started (SIGTERM, then SIGKILL), by its process id."""
    if daemon.poll() is not None:
        return
    daemon.send_signal(signal.SIGTERM)
    try:
        daemon.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait(timeout=timeout_s)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tests.slurm.cluster FOLDER -- COMMAND...``: run COMMAND against a fresh cluster in FOLDER."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 3 or args[1] != "--":
        print(main.__doc__, file=sys.stderr)
        return 2
    node = NodeSize(cpus=max(os.cpu_count() or 1, 4), memory_mb=16000, gpus=2)
    with local_slurm(Path(args[0]), node=node) as cluster:
        return subprocess.run(args[2:], env=cluster.env).returncode


if __name__ == "__main__":
    sys.exit(main())
