"""The environment: requirements.txt, the lock, this clone's .venv and what git ignores.

Fast checks only (nothing is installed): the pins a person edits agree with the lock that `make`
installs, the lock pins everything exactly, and the `.venv` of this clone imports this clone's
kronlib and runs its notebooks on its own python.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "requirements.txt"
LOCK = ROOT / "requirements.lock"
VENV = ROOT / ".venv"
VENV_PYTHON = VENV / "bin" / "python"

spec = importlib.util.spec_from_file_location("kronenv", ROOT / "tools" / "kronenv.py")
kronenv = importlib.util.module_from_spec(spec)
spec.loader.exec_module(kronenv)


def test_every_pin_of_requirements_is_in_the_lock_at_the_same_version():
    problems = kronenv.disagreements(REQUIREMENTS, LOCK)
    assert not problems, "run `make lock`: " + "; ".join(problems)


def test_disagreement_is_detected(tmp_path):
    requirements = tmp_path / "requirements.txt"
    lock = tmp_path / "requirements.lock"
    requirements.write_text("# a comment\nnumpy==2.4.6\nTorch==2.14.1\nruff==0.1.0\n")
    lock.write_text("numpy==2.4.6 \\\n    --hash=sha256:00\ntorch==2.14.1 --hash=sha256:11\n")
    assert kronenv.disagreements(requirements, lock) == ["ruff==0.1.0 is not in requirements.lock"]
    lock.write_text("numpy==2.4.7 \\\n    --hash=sha256:00\ntorch==2.14.1\nruff==0.1.0\n")
    assert kronenv.disagreements(requirements, lock) == [
        "numpy==2.4.6 but requirements.lock has numpy==2.4.7"
    ]


def test_requirements_pins_every_direct_dependency_exactly():
    assert kronenv.unpinned_lines(REQUIREMENTS) == []


def test_lock_pins_every_package_exactly_with_a_hash():
    assert kronenv.unpinned_lines(LOCK) == []
    blocks = kronenv._lock_blocks(LOCK)
    pins = kronenv.read_pins(LOCK)
    assert len(blocks) == len(pins) > len(kronenv.read_pins(REQUIREMENTS))
    without_hash = [block.split()[0] for block in blocks if "--hash=sha256:" not in block]
    assert without_hash == []
    assert "kronlib" not in pins, "the clone's own package is installed editable, never locked"
    assert "pip" in pins, "the lock pins the installer too"


def test_unpinned_lines_are_found(tmp_path):
    lock = tmp_path / "lock"
    lock.write_text("# c\n--extra-index-url x\nnumpy>=2\nscipy==1.*\ntorch==2.14.1\n")
    assert kronenv.unpinned_lines(lock) == ["numpy>=2", "scipy==1.*"]


def test_gitignore_ignores_the_venv():
    assert ".venv/" in (ROOT / ".gitignore").read_text().splitlines()
    tracked = subprocess.run(
        ["git", "-C", str(ROOT), "check-ignore", "-q", ".venv/bin/python"], check=False
    )
    if tracked.returncode == 128:
        pytest.skip("not a git checkout")
    assert tracked.returncode == 0


needs_venv = pytest.mark.skipif(
    not VENV_PYTHON.exists(), reason="no .venv in this clone yet (`make develop` creates it)"
)


@needs_venv
def test_venv_imports_this_clones_kronlib():
    out = subprocess.run(
        # where `import kronlib` resolves, without importing torch (seconds) to find out
        [
            str(VENV_PYTHON),
            "-c",
            "import importlib.util as u, sys;"
            "print(u.find_spec('kronlib').origin); print(sys.prefix)",
        ],
        cwd="/",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert Path(out[0]).resolve() == (ROOT / "kronlib" / "__init__.py").resolve()
    assert Path(out[1]).resolve() == VENV.resolve()


@needs_venv
def test_venv_runs_on_the_locked_base():
    base = Path((VENV / kronenv.MARKER).read_text().strip())
    assert base.name.startswith(f"base-{kronenv.lock_hash(LOCK)}"), "`make develop` re-points it"
    code = (
        "import importlib.metadata as m, json;"
        "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
    )
    out = subprocess.run(
        [str(VENV_PYTHON), "-c", code], capture_output=True, text=True, check=True, cwd="/"
    ).stdout
    installed = {kronenv.normalize(k): v for k, v in json.loads(out).items()}
    locked = kronenv.read_pins(LOCK)
    if base.name.endswith("-cpu"):  # TORCH=cpu: torch's CPU build, without the CUDA packages
        locked = {k: v for k, v in locked.items() if not kronenv._skip_for_cpu(k + "==")}
        installed = {k: v for k, v in installed.items() if k not in ("torch", "torchvision")}
    assert installed.pop("kronlib", None) is not None
    assert installed == locked


@needs_venv
def test_commands_and_kernel_of_the_venv_run_its_python():
    for command in ("jupyter-book", "pytest", "jupyter"):
        script = (VENV / "bin" / command).read_text()
        assert script.startswith(f"#!{VENV_PYTHON}\n") or f'"{VENV_PYTHON}"' in script
    assert os.access(VENV / "bin" / "ruff", os.X_OK)
    code = (
        "from jupyter_client.kernelspec import KernelSpecManager as K;"
        "print(K().get_kernel_spec('python3').argv[0])"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
    argv0 = subprocess.run(
        [str(VENV_PYTHON), "-c", code], capture_output=True, text=True, check=True, cwd="/", env=env
    ).stdout.strip()
    assert argv0 == str(VENV_PYTHON) or (argv0 == "python" and sys.prefix == str(VENV))


def _fake_base(home: Path, name: str, *clones: Path) -> Path:
    base = home / name
    (base / "clones").mkdir(parents=True)
    (base / kronenv.COMPLETE).write_text("")
    for clone in clones:
        kronenv.register(base, clone)
    return base


def _fake_clone(path: Path, base: Path) -> Path:
    (path / ".venv").mkdir(parents=True)
    (path / ".venv" / kronenv.MARKER).write_text(f"{base}\n")
    (path / ".venv" / kronenv.CLONE_MARKER).write_text(f"{path}\n")
    return path


def test_clean_env_removes_only_what_no_clone_uses(tmp_path, capsys):
    home = tmp_path / "home"
    here, other, gone, moved = (tmp_path / n for n in ("here", "other", "gone", "moved"))
    shared = _fake_base(home, "base-aaaaaaaaaaaa", here, other)
    unused = _fake_base(home, "base-bbbbbbbbbbbb", here, gone, moved)
    newer = _fake_base(home, "base-cccccccccccc", moved)
    old_layout = home / "venv-0123456789ab"
    old_layout.mkdir()
    _fake_clone(here, shared)
    _fake_clone(other, shared)
    _fake_clone(moved, newer)  # used `unused` once, runs on another base now
    # `gone` was deleted without `make clean-env`: it uses nothing
    assert kronenv.main(["clean", "--home", str(home), "--venv", str(here / ".venv")]) == 0
    assert not (here / ".venv").exists()
    assert shared.exists() and newer.exists() and old_layout.exists()
    assert not unused.exists()
    assert f"kept {shared}: in use by {other}" in capsys.readouterr().out
    assert kronenv.main(["clean", "--home", str(home), "--venv", str(other / ".venv")]) == 0
    assert not shared.exists() and newer.exists()


def test_clean_env_keeps_a_venv_it_did_not_make(tmp_path):
    venv = tmp_path / ".venv"
    (venv / "bin").mkdir(parents=True)
    assert kronenv.main(["clean", "--home", str(tmp_path / "h"), "--venv", str(venv)]) == 0
    assert (venv / "bin").exists()
