"""Are downpool's outputs bit-identical to those of another commit?

Run from the repository root::

    python benchmarks/bit_identity.py --against da45d5a          # the default set
    python benchmarks/bit_identity.py --against HEAD~3 --megapixels 4 --quick

Every case of ``tests/cases.py`` (the extremes too) runs on every dtype over
several geometries -- blocks (constant and run-time sizes, with partial
edges), overlapping strides, area sizes -- with alpha and linear light, on
a photograph tiled to ``--megapixels`` (24 by default, as users' photos), on
a 1 MP crop of it, and on every image of ``sample_images/``.  Each output's
SHA-256 is computed by this checkout and, in a subprocess, by a git worktree
of ``--against``; the two lists must be equal.  Methods the other commit
does not have are left out (and said).  The check is a record of the change,
not a test: 24 MP in four dtypes takes minutes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from source_trees import import_path  # noqa: E402

#: (name, geometry) over every image.
GEOMETRIES = [
    ("k2", {"kernel_size": 2}),
    ("k3", {"kernel_size": 3}),
    ("k3s2", {"kernel_size": 3, "stride": 2}),
    ("size", {"scale": 0.37}),
    ("quarter", {"scale": 0.25}),
]
OPTIONS = [("", {}), ("alpha", {"has_alpha": True}), ("linear", {"linear": True}),
           ("alpha+linear", {"has_alpha": True, "linear": True})]
DTYPES = ["uint8", "uint16", "float32", "float64"]


def _images(megapixels: float, quick: bool):
    """(name, array) of the images: the tiled photograph (RGB and RGBA, even and odd
    sizes), a 1 MP crop, and the sample images."""
    import numpy as np
    from PIL import Image

    from bench_kernels import make_image

    big = make_image(megapixels, "uint8")
    yield f"{megapixels:g}MP", big
    if not quick:
        odd = make_image(megapixels, "uint8", odd=True)
        alpha = np.concatenate([odd, odd[..., 1:2]], axis=2)
        yield f"{megapixels:g}MP-odd-rgba", alpha
    yield "1MP", np.ascontiguousarray(big[:817, :1224])
    for path in sorted(p for p in (ROOT / "sample_images").iterdir() if p.suffix != ".md"):
        with Image.open(path) as im:
            yield path.name, np.asarray(im).copy()


def _as(img, dtype: str):
    import numpy as np

    if dtype == "uint8":
        return img
    if dtype == "uint16":
        return img.astype(np.uint16) * 257
    return (img / 255.0).astype(dtype)


def hashes(megapixels: float, quick: bool, methods: set[str] | None) -> dict[str, str]:
    """SHA-256 of every output this checkout's (or PYTHONPATH's) downpool makes."""
    import downpool

    sys.path.insert(0, str(ROOT / "tests"))
    from cases import CASES

    result = {}
    for name, image in _images(megapixels, quick):
        large = image.size > 4_000_000
        for dtype in DTYPES:
            img = _as(image, dtype)
            for case in CASES:
                if case.method not in downpool.METHODS or (methods and case.method not in methods):
                    continue
                if large and (case.extreme or dtype == "float64"):
                    continue  # the extremes take the general kernels: minutes at 24 MP
                for geo_name, geometry in GEOMETRIES:
                    if large and geo_name not in ("k2", "quarter"):
                        continue
                    if "stride" in geometry and downpool.METHODS[case.method].area_only:
                        continue
                    for opt_name, options in OPTIONS:
                        if getattr(downpool.METHODS[case.method], "labels", False) and options:
                            continue
                        if options.get("has_alpha") and (img.ndim < 3 or img.shape[2] < 2):
                            continue
                        if large and options and opt_name != "alpha+linear":
                            continue
                        out = downpool.downscale(img, case.method, device="cpu", **geometry,
                                                 **options, **case.params)
                        key = f"{name} {dtype} {case.id} {geo_name} {opt_name}".rstrip()
                        result[key] = hashlib.sha256(out.tobytes()).hexdigest()
                        print(key, result[key][:12], flush=True, file=sys.stderr)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", help="the git commit to compare with")
    parser.add_argument("--megapixels", type=float, default=24.0)
    parser.add_argument("--quick", action="store_true", help="no odd-sized RGBA large image")
    parser.add_argument("--methods", default=None, help="comma-separated methods (default: all)")
    parser.add_argument("--hashes", type=Path, help=argparse.SUPPRESS)  # the subprocess's output
    args = parser.parse_args(argv)
    methods = set(args.methods.split(",")) if args.methods else None
    if args.hashes:
        args.hashes.write_text(json.dumps(hashes(args.megapixels, args.quick, methods)))
        return 0
    if not args.against:
        parser.error("--against COMMIT is needed")
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), args.against],
                       cwd=ROOT, check=True, capture_output=True)
        try:
            theirs_file = Path(tmp) / "theirs.json"
            env = dict(os.environ, PYTHONPATH=import_path(tree))
            # -P: the checkout's own folder must not come first on sys.path.
            command = [sys.executable, "-P", str(Path(__file__).resolve()), "--hashes",
                       str(theirs_file), "--megapixels", str(args.megapixels)]
            if args.quick:
                command.append("--quick")
            if args.methods:
                command += ["--methods", args.methods]
            subprocess.run(command, env=env, check=True, cwd=tmp)
            theirs = json.loads(theirs_file.read_text())
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT,
                           check=False, capture_output=True)
    sys.path.insert(0, import_path(ROOT))  # this checkout's code, not an installed copy
    ours = hashes(args.megapixels, args.quick, methods)
    only_ours = sorted(set(ours) - set(theirs))
    differ = sorted(k for k in set(ours) & set(theirs) if ours[k] != theirs[k])
    missing = sorted(set(theirs) - set(ours))
    new_methods = sorted({k.split()[2].split("-")[0] for k in only_ours})
    print(f"{len(set(ours) & set(theirs))} outputs compared with {args.against}: "
          f"{len(differ)} differ" + (f"; not in {args.against}: {', '.join(new_methods)}"
                                     if new_methods else ""))
    for key in differ[:40]:
        print("DIFFERS", key)
    for key in missing[:40]:
        print("MISSING here", key)
    return 1 if differ or missing else 0


if __name__ == "__main__":
    sys.exit(main())
