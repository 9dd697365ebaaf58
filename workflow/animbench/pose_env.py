"""The pose environment: a separate virtual environment for openpifpaf (body AKD/MKR).

openpifpaf's last release (0.13.11) is an sdist with a C++ extension built against the torch it
is installed with, and it pins torch 1.13.1. Against the main environment's torch its extension
does not compile (recent torch headers need C++20, openpifpaf forces C++17), so it lives in its
own venv with torch 2.5.1 (the newest torch known to build it; also below torch 2.6, whose
``torch.load(weights_only=True)`` default refuses openpifpaf's pickled .pkl checkpoints) and is
installed with ``--no-deps --no-build-isolation`` so that pip neither replaces that torch by the
pinned 1.13.1 nor builds against a different one. The main environment talks to it through a
worker process (``animbench.evaluate.backends.openpifpaf_backend``).

``create_pose_env`` is resumable: the stamp file is written last, only after openpifpaf imports
with its ``_cpp`` extension; a prefix without a stamp (an interrupted build) is removed and built
again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from animbench.errors import AnimbenchError

DEFAULT_PREFIX = Path("resources/envs/pose")
STAMP = ".animbench-ready"
ENV_VARIABLE = "ANIMBENCH_POSE_ENV"

# torch first (alone, so pip cannot pick another one for openpifpaf), then openpifpaf's runtime
# dependencies from its setup.py install_requires minus the torch/torchvision pins, plus the
# build tools that --no-build-isolation takes from the environment. numpy < 2: openpifpaf
# 0.13.11 predates numpy 2.
TORCH = ("torch==2.5.1", "torchvision==0.20.1")
RUNTIME = (
    "numpy>=1.24,<2",
    "pillow!=8.3.0",
    "importlib_metadata!=3.8.0",
    "pysparkling",
    "python-json-logger",
    "setuptools>=61,<70",
    "wheel",
)
OPENPIFPAF_VERSION = "0.13.11"
# measured on x86_64 Linux: the finished venv is 5.3 GB (2.7 GB of it PyPI's CUDA libraries, which
# torch's wheel needs to import even on a CPU), and pip holds about 3 GB of downloaded wheels
# while it installs; checked up front so that a full disk is a one-line error, not a failure
# minutes into the build (or a disk filled for everything else running on the machine)
NEEDED_BYTES = 9 * 1024**3
OPENPIFPAF = f"openpifpaf=={OPENPIFPAF_VERSION}"

# `import openpifpaf` loads its C++ extension (_cpp*.so, a torch op library, not a Python
# module) and registers the CifCaf decoder class: both fail if the build is broken
_VERIFY = (
    "import glob, json, os, sys, torch, openpifpaf; "
    "torch.classes.openpifpaf_decoder.CifCaf; "
    "print(json.dumps({'python': sys.version.split()[0], 'torch': torch.__version__, "
    "'openpifpaf': openpifpaf.__version__, 'numpy': __import__('numpy').__version__, "
    "'cpp': glob.glob(os.path.join(os.path.dirname(openpifpaf.__file__), '_cpp*'))}))"
)


def pose_env_prefix(prefix: str | os.PathLike | None = None) -> Path:
    """The pose environment's folder: ``prefix``, else $ANIMBENCH_POSE_ENV, else the default."""
    return Path(prefix or os.environ.get(ENV_VARIABLE) or DEFAULT_PREFIX)


def pose_python(prefix: Path) -> Path:
    return prefix / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _spec() -> dict:
    return {"torch": list(TORCH), "runtime": list(RUNTIME), "openpifpaf": OPENPIFPAF}


def _stamp(prefix: Path) -> dict:
    try:
        stamp = json.loads((prefix / STAMP).read_text())
    except (OSError, ValueError):
        return {}
    return stamp if isinstance(stamp, dict) else {}


def is_ready(prefix: Path) -> bool:
    """Whether ``prefix`` holds a finished pose environment with the pinned openpifpaf.

    Any builder may write the stamp (``create_pose_env``, or envs/pose.post-deploy.sh for a
    conda environment): what counts is the openpifpaf version it verified.
    """
    versions = _stamp(prefix).get("versions") or {}
    return versions.get("openpifpaf") == OPENPIFPAF_VERSION and pose_python(prefix).exists()


def check_free_space(prefix: Path) -> None:
    """Raise a one-line error when the disk holding ``prefix`` has less than NEEDED_BYTES free."""
    needed = NEEDED_BYTES
    folder = next(p for p in (prefix, *prefix.parents) if p.exists())
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise AnimbenchError(
            f"pose environment: {prefix} needs about {needed / 1024**3:.0f} GB free while it is "
            f"built (5.3 GB when done), but {folder} has {free / 1024**3:.1f} GB; free some "
            "space or build it elsewhere with --prefix (or $ANIMBENCH_POSE_ENV)"
        )


# what pip prints when a download went wrong on the way (a truncated or corrupted wheel fails
# its hash check; a dropped connection): worth another try, unlike a missing version
_TRANSIENT = (
    "do not match the hashes",
    "connection",
    "timed out",
    "incompleteread",
    "protocolerror",
    "chunkedencodingerror",
)
PIP_ATTEMPTS = 3


def _failure_line(output: str) -> str:
    """The line of pip's output that says what went wrong (its last line is often a hash)."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("ERROR:"):
            return line
    return lines[-1] if lines else "no output"


def _run(step: str, command: list[str], log, attempts: int = 1) -> None:
    """Run one build step, logging its output; retry a step whose failure looks transient."""
    start = time.monotonic()
    print(f"pose-env: {step} …", flush=True)
    for attempt in range(1, attempts + 1):
        result = subprocess.run(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        log.write(f"$ {' '.join(command)}\n{result.stdout}\n")
        log.flush()
        if result.returncode == 0:
            break
        transient = any(mark in result.stdout.lower() for mark in _TRANSIENT)
        if attempt < attempts and transient:
            print(
                f"pose-env: {step}: attempt {attempt} failed ({_failure_line(result.stdout)}); "
                "retrying",
                flush=True,
            )
            continue
        raise AnimbenchError(
            f"pose environment: {step} failed (exit {result.returncode}, attempt {attempt}): "
            f"{_failure_line(result.stdout)}; full output in {log.name}"
        )
    print(f"pose-env: {step} done in {time.monotonic() - start:.0f} s", flush=True)


def create_pose_env(
    prefix: str | os.PathLike | None = None, *, python: str | None = None, force: bool = False
) -> Path:
    """Build the pose environment at ``prefix`` (see module doc); returns the prefix.

    ``python``: the interpreter the venv is made from (default: this one; torch 2.5.1 has
    wheels for CPython 3.9-3.13, openpifpaf was tested up to 3.10 and builds on 3.11).
    """
    prefix = pose_env_prefix(prefix)
    # a venv of an older specification of ours is rebuilt; a conda env (no spec) is kept
    spec = _stamp(prefix).get("spec", _spec())
    if is_ready(prefix) and spec == _spec() and not force:
        print(f"pose-env: {prefix} is ready", flush=True)
        return prefix
    if prefix.exists():
        # only ever delete what looks like a virtual environment (or an empty folder)
        if not (prefix / "pyvenv.cfg").is_file() and any(prefix.iterdir()):
            raise AnimbenchError(f"{prefix}: exists and is not a virtual environment; remove it")
        print(f"pose-env: removing the unfinished environment {prefix}", flush=True)
        shutil.rmtree(prefix)
    check_free_space(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    log_path = prefix.parent / f"{prefix.name}.build.log"
    env_python = str(pose_python(prefix))
    # no wheel cache: it would keep another 3 GB of torch and CUDA wheels for a one-off build
    pip = [env_python, "-m", "pip", "install", "--disable-pip-version-check", "--no-cache-dir"]
    with open(log_path, "w") as log:
        _run("create venv", [python or sys.executable, "-m", "venv", str(prefix)], log)
        _run("install torch", [*pip, *TORCH], log, PIP_ATTEMPTS)
        _run("install openpifpaf dependencies", [*pip, *TORCH, *RUNTIME], log, PIP_ATTEMPTS)
        _run(
            "build openpifpaf (C++ extension)",
            [*pip, "--no-deps", "--no-build-isolation", OPENPIFPAF],
            log,
            PIP_ATTEMPTS,
        )
        verify = subprocess.run([env_python, "-c", _VERIFY], capture_output=True, text=True)
        log.write(f"$ verify\n{verify.stdout}{verify.stderr}\n")
        if verify.returncode != 0:
            last = (verify.stderr.strip().splitlines() or ["no output"])[-1]
            raise AnimbenchError(f"pose environment: openpifpaf does not import: {last}")
        versions = json.loads(verify.stdout.strip().splitlines()[-1])
        freeze = subprocess.run(
            [env_python, "-m", "pip", "freeze"], stdout=subprocess.PIPE, text=True, check=True
        ).stdout.split()
    seconds = time.monotonic() - start
    stamp = {"spec": _spec(), "versions": versions, "seconds": round(seconds), "freeze": freeze}
    (prefix / STAMP).write_text(json.dumps(stamp, indent=1) + "\n")
    print(
        f"pose-env: ready in {seconds:.0f} s: {prefix} (openpifpaf {versions['openpifpaf']}, "
        f"torch {versions['torch']}, Python {versions['python']}); log {log_path}",
        flush=True,
    )
    return prefix
