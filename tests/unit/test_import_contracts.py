"""The import-linter contracts hold, and would catch a framework import in the domain."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(project / "pyproject.toml"), "--no-cache"],
        cwd=project,
        env={"PYTHONPATH": str(project / "src"), "PATH": str(Path(sys.executable).parent)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_planted_torch_import_in_domain_breaks_the_contract(tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", project / "pyproject.toml")
    clean = lint_imports(project)
    assert clean.returncode == 0, clean.stdout + clean.stderr

    (project / "src/largeforge/domain/leak.py").write_text("import torch\n")
    broken = lint_imports(project)
    assert broken.returncode != 0
    assert "Core is framework-free" in broken.stdout
    assert "largeforge.domain.leak -> torch" in broken.stdout


def test_planted_adapter_import_in_an_entrypoint_breaks_the_composition_root(
    tmp_path: Path,
) -> None:
    """Only container.py names concrete adapters: an entrypoint that builds one itself fails."""
    project = tmp_path / "project"
    shutil.copytree(ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", project / "pyproject.toml")
    leak = project / "src/largeforge/entrypoints/cli/leak.py"
    leak.write_text("def make():\n    from largeforge.adapters.peft.merge import PeftLoraMerger\n")
    broken = lint_imports(project)
    assert broken.returncode != 0
    assert "Entrypoints import no adapters" in broken.stdout
    assert "largeforge.entrypoints.cli.leak -> largeforge.adapters.peft.merge" in broken.stdout
