"""The conda route's environment (envs/animbench.yaml, `snakemake --sdm conda`): every rule runs
in it, it declares every package the `animbench` commands import, at pyproject.toml's versions,
from conda-forge alone, and its post-deploy script installs animbench itself into it."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ci_support import REPO
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")

ENV = REPO / "envs" / "animbench.yaml"
POST_DEPLOY = REPO / "envs" / "animbench.post-deploy.sh"
# the optional dependencies the rules need: the real datasets' YouTube downloads, face AKD
EXTRAS_USED = ("youtube", "detectors")
# import name -> distribution name, where they differ
DISTRIBUTIONS = {
    "PIL": "pillow",
    "yaml": "pyyaml",
    "ffmpeg": "ffmpeg-python",
    "imageio_ffmpeg": "imageio-ffmpeg",
    "yt_dlp": "yt-dlp",
    "face_alignment": "face-alignment",
}
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name -> distribution name
# imported only inside the pose environment (envs/pose.yaml, `animbench pose-env`)
ELSEWHERE = {"openpifpaf"}


def _requirement(spec: str) -> Requirement:
    """A conda match spec as a PEP 508 requirement (`python=3.11` means 3.11.*)."""
    name, sep, version = re.match(r"^([A-Za-z0-9_.\-\[\]]+)(=?)([^=<>!~].*)?$", spec).groups()
    if sep and version:
        return Requirement(f"{name}=={version}.*")
    return Requirement(spec)


def env_requirements() -> dict[str, Requirement]:
    """Distribution name -> requirement, conda and pip sections together."""
    out: dict[str, Requirement] = {}
    for dep in yaml.safe_load(ENV.read_text())["dependencies"]:
        if isinstance(dep, dict):
            reqs = [Requirement(line) for line in dep["pip"]]
        else:
            reqs = [_requirement(dep.split("#")[0].strip())]
        for req in reqs:
            name = canonicalize_name(CONDA_NAMES.get(req.name, req.name))
            assert name not in out, f"{name} declared twice in {ENV.name}"
            out[name] = req
    return out


def pyproject_requirements() -> dict[str, list[Requirement]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in EXTRAS_USED:
        lines += project["optional-dependencies"][extra]
    out: dict[str, list[Requirement]] = {}
    for line in lines:
        req = Requirement(line)
        out.setdefault(canonicalize_name(req.name), []).append(req)
    return out


def expected_specifier(reqs: list[Requirement]) -> SpecifierSet:
    """The pins of one distribution over pyproject.toml: an exact pin, else the highest floor."""
    specs = [spec for req in reqs for spec in req.specifier]
    exact = {spec.version for spec in specs if spec.operator == "=="}
    if exact:
        assert len(exact) == 1, reqs
        return SpecifierSet(f"=={exact.pop()}")
    floors = [Version(spec.version) for spec in specs if spec.operator == ">="]
    assert len(floors) == len(specs), f"only >= and == pins are compared: {reqs}"
    return SpecifierSet(f">={max(floors)}") if floors else SpecifierSet()


def test_every_rule_with_a_command_runs_in_the_environment():
    checked = []
    for smk in sorted((REPO / "rules").glob("*.smk")):
        blocks = re.split(r"^(?=rule \w+:)", smk.read_text(), flags=re.M)[1:]
        for block in blocks:
            name = block.split(":")[0].removeprefix("rule ")
            if not re.search(r"^    (shell|script|run):", block, flags=re.M):
                continue
            envs = re.findall(r'^    conda:\s*\n\s*"([^"]+)"', block, flags=re.M)
            assert envs == ["../envs/animbench.yaml"], f"{smk.name}: rule {name}: {envs}"
            checked.append(name)
    assert {"train", "reconstruct", "metrics", "weights", "synthetic"} <= set(checked)


def test_environment_declares_every_package_the_code_imports():
    declared = set(env_requirements())
    missing = {}
    for path in (REPO / "workflow" / "animbench").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in {name.split(".")[0] for name in names}:
                if top in sys.stdlib_module_names or top == "animbench" or top in ELSEWHERE:
                    continue
                if canonicalize_name(DISTRIBUTIONS.get(top, top)) not in declared:
                    missing.setdefault(top, path.relative_to(REPO).as_posix())
    assert not missing, f"imported but not in {ENV.name}: {missing}"


def test_environment_versions_are_pyprojects():
    env = env_requirements()
    for name, reqs in pyproject_requirements().items():
        assert name in env, f"{name} (pyproject.toml) missing from {ENV.name}"
        assert env[name].specifier == expected_specifier(reqs), (name, str(env[name]), reqs)
        extras = set().union(*(req.extras for req in reqs))
        assert extras <= env[name].extras, (name, extras)
    # and nothing pinned in the environment that pyproject.toml does not pin the same way
    project = pyproject_requirements()
    for name, req in env.items():
        if req.specifier and name not in project and name not in ("python", "setuptools"):
            pytest.fail(f"{ENV.name} pins {req} which pyproject.toml does not declare")
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    python = str(env["python"].specifier).removeprefix("==").removesuffix(".*")
    assert Version(python) in SpecifierSet(requires)
    build = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    assert env["setuptools"].specifier == Requirement(build[0]).specifier  # builds the install


def test_environments_are_conda_forge_only():
    for path in sorted((REPO / "envs").glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())
        assert spec["channels"] == ["conda-forge", "nodefaults"], path.name
        names = [d.split("=")[0].split(">")[0] for d in spec["dependencies"] if isinstance(d, str)]
        assert "pytorch-cuda" not in names, path.name  # the `pytorch` channel's package
        assert "torchreid" not in path.read_text(), path.name  # imported by nothing


def _run_post_deploy(tmp_path: Path, cwd: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run the post-deploy script with a stand-in `python` that records its arguments."""
    bindir, calls = tmp_path / "bin", tmp_path / "calls.txt"
    bindir.mkdir(exist_ok=True)
    (bindir / "python").write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    (bindir / "python").chmod(0o755)
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}")
    env.pop("ANIMBENCH_CHECKOUT", None)
    proc = subprocess.run(
        ["bash", str(POST_DEPLOY)], cwd=cwd, env=env, capture_output=True, text=True
    )
    return proc, calls.read_text().splitlines() if calls.exists() else []


def test_post_deploy_installs_animbench_from_the_checkout(tmp_path):
    # Snakemake runs it inside the new environment, in the directory it runs in (the checkout)
    proc, calls = _run_post_deploy(tmp_path, REPO)
    assert proc.returncode == 0, proc.stderr
    assert calls[0] == f"-m pip install --no-deps --no-build-isolation -e {REPO}"
    assert calls[1] == "-m animbench.cli --help"  # the installed package loads
    # anywhere else it stops, naming the folder, and installs nothing
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc, calls = _run_post_deploy(elsewhere, elsewhere)
    assert proc.returncode == 1 and calls == []
    assert f"{elsewhere} is not the animbench checkout" in proc.stderr


# ----------------------------------------------------------------------------- the image

IMAGE_DEF = REPO / "envs" / "animbench.def"


def image_sections() -> dict[str, list[str]]:
    """The definition's header lines ('') and each %section's lines, comments dropped."""
    sections: dict[str, list[str]] = {"": []}
    current = ""
    for raw in IMAGE_DEF.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("%"):
            current = line[1:]
            sections[current] = []
        else:
            sections[current].append(line)
    return sections


def test_image_installs_the_checkout_with_what_the_rules_need():
    sections = image_sections()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    # what building the package needs, copied from the checkout (paths relative to it)
    copied = {line.split()[0]: line.split()[1] for line in sections["files"]}
    package_root = project["tool"]["setuptools"]["packages"]["find"]["where"][0]
    assert set(copied) == {"pyproject.toml", project["project"]["readme"], package_root}
    assert all((REPO / source).exists() for source in copied)
    prefix = {str(Path(dest).parent) for dest in copied.values()}
    assert len(prefix) == 1
    extras = ",".join(EXTRAS_USED)
    assert f'pip install --no-cache-dir "{prefix.pop()}[{extras}]"' in sections["post"]
    assert any("ffmpeg" in line for line in sections["post"] if "apt-get install" in line)
    # the same Python as the conda route's environment, within requires-python
    base = dict(line.split(":", 1) for line in sections[""])
    python = re.match(r"python:(\d+\.\d+)-", base["From"].strip()).group(1)
    assert env_requirements()["python"].specifier == SpecifierSet(f"=={python}.*")
    assert Version(python) in SpecifierSet(project["project"]["requires-python"])


def test_workflow_runs_jobs_in_the_image_the_definition_builds():
    # the build command the definition documents writes the image the workflow names
    build = re.search(r"apptainer build (\S+) envs/animbench.def", IMAGE_DEF.read_text())
    common = (REPO / "rules" / "common.smk").read_text()
    assert re.findall(r'^container: "([^"]+)"', common, flags=re.M) == [build.group(1)]
