"""Compile the order book (``domain/book.py``) with mypyc: ``python -m services.matching.build_book``.

Run by ``make install``. Writes a copy of ``book.py`` as ``domain/_compiled_book.py``
with the hash of its sources appended (``SOURCE_HASH``, see ``domain/implementation.py``),
compiles that one module in place into ``domain/_compiled_book.<abi>.so`` (and mypyc's
``_compiled_book__mypyc.<abi>.so`` beside it; both git-ignored)
and deletes the copy, so that the repository holds one source of the book. The
compiled module imports ``events``, ``order`` and ``types`` as the ordinary Python
modules (one ``OrderView``, one ``BookConfigError``) and inlines their constants.

Needs a C compiler and the Python headers; mypy (which contains mypyc) is a dev
dependency. Uses the standard library's distutils (Python 3.11), so no setuptools.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

os.environ["MATCHING_BOOK"] = "pure"  # importing the package must not look for the build

from services.matching.domain.implementation import COMPILED_MODULE, source_hash

DOMAIN = Path(__file__).resolve().parent / "domain"
ROOT = DOMAIN.parents[2]


def build() -> Path:
    """Build the compiled module; return the path of the extension module."""
    digest = source_hash()
    copy = DOMAIN / "_compiled_book.py"
    text = (DOMAIN / "book.py").read_text()
    copy.write_text(
        text + "\n\n#: Written by services/matching/build_book.py: hash of the sources.\n"
        f'SOURCE_HASH = "{digest}"\n'
    )
    for old in DOMAIN.glob("_compiled_book*.so"):
        old.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from distutils.core import setup

        import mypyc.build
        from mypyc.build import mypycify

    # mypycify() patches a setuptools build_ext method (a macOS rebuild optimisation) and
    # imports setuptools for it; this build uses distutils, so mark the patch as done.
    mypyc.build._setuptools_patch_applied = True

    cwd = Path.cwd()
    os.chdir(ROOT)
    try:
        with tempfile.TemporaryDirectory(prefix="book-mypyc-") as tmp:
            extensions = mypycify(
                [str(copy.relative_to(ROOT)), "--config-file", str(ROOT / "pyproject.toml")],
                opt_level="3",
                target_dir=tmp,
            )
            setup(
                name="matching_book_compiled",
                ext_modules=extensions,
                script_args=["--quiet", "build_ext", "--inplace", "--build-temp", tmp],
            )
    finally:
        os.chdir(cwd)
        copy.unlink()
        shutil.rmtree(DOMAIN / "__pycache__", ignore_errors=True)
    built = list(DOMAIN.glob("_compiled_book.*.so"))
    if len(built) != 1:
        raise SystemExit(f"mypyc build of {COMPILED_MODULE} produced {built}")
    return built[0]


def main() -> int:
    path = build()
    print(f"built {path.relative_to(ROOT)} (sources {source_hash()[:12]})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
