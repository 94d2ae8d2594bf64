"""The README's set-up commands, read out of the README, so that CI runs what users are told to.

    python .ci/readme_command.py print N    # command N (1 or 2) of "Set-up in two commands"
    python .ci/readme_command.py run 1      # run command 1 as a user would, and check its outputs

``run 1`` runs the command with ``bash`` in a copy of this checkout (its
tracked files and the untracked ones git does not ignore: what a fresh clone
with these changes holds), with the ``python`` that runs this script first
on ``PATH`` (CI's new virtual environment).  It fails when the command exits
non-zero, prints a traceback, or leaves an input image of its ``downpool
shrink`` without an output that Pillow opens, smaller than the input.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Set-up in two commands"


def commands(readme: Path = ROOT / "README.md") -> list[str]:
    """The command lines of the first ``bash`` block of the set-up section, comments left out."""
    text = readme.read_text(encoding="utf-8")
    start = text.index(SECTION)
    block = re.search(r"```bash\n(.*?)```", text[start:], re.S)
    if block is None:
        raise SystemExit(f"README.md: no ```bash block under {SECTION!r}")
    lines = [line.strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _copy_checkout(target: Path) -> None:
    """The files a fresh clone with this checkout's changes holds."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard"], cwd=ROOT, capture_output=True,
                                check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        shutil.copytree(ROOT, target, ignore=shutil.ignore_patterns(".git"), symlinks=True)
        return
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():  # a file deleted but not yet staged is listed too
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def _shrink_folders(command: str) -> tuple[str, str]:
    """The input folder and ``-o`` folder of the command's ``downpool shrink``."""
    words = shlex.split(command)
    at = words.index("shrink")
    return words[at + 1], words[words.index("-o", at) + 1]


def _check_outputs(checkout: Path, command: str) -> list[str]:
    from PIL import Image

    source, output = (checkout / folder for folder in _shrink_folders(command))
    problems = []
    for path in sorted(source.iterdir()):
        if path.suffix == ".md":
            continue
        made = sorted(output.glob(path.stem + ".*"))
        if len(made) != 1:
            problems.append(f"{path.name}: {len(made)} outputs in {output.name}/")
            continue
        with Image.open(path) as original, Image.open(made[0]) as small:
            if not (small.width < original.width and small.height < original.height):
                problems.append(f"{made[0].name}: {small.size} is not smaller than {original.size}")
    return problems


def run_first() -> int:
    command = commands()[0]
    with tempfile.TemporaryDirectory(prefix="downpool-readme-") as tmp:
        checkout = Path(tmp) / "checkout"
        _copy_checkout(checkout)
        bin_dir = os.path.dirname(sys.executable)
        env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""),
                   VIRTUAL_ENV=os.path.dirname(bin_dir))
        print(f"$ {command}", flush=True)
        result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", command], cwd=checkout,
                                env=env, capture_output=True, text=True)
        print(result.stdout[-4000:] + result.stderr[-4000:], flush=True)
        problems = [] if result.returncode == 0 else [f"the command exited {result.returncode}"]
        if "Traceback" in result.stdout + result.stderr:
            problems.append("the command printed a traceback")
        if not problems:
            problems = _check_outputs(checkout, command)
    for problem in problems:
        print(f"README command 1: {problem}", file=sys.stderr)
    return 1 if problems else 0


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "print" and argv[1] in ("1", "2"):
        print(commands()[int(argv[1]) - 1])
        return 0
    if argv == ["run", "1"]:
        return run_first()
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
