#!/usr/bin/env bash
# Compile a copy of services/matching/domain with mypyc, as package `matching_compiled`
# under .bench/mypyc (git-ignored), for the "ours (mypyc)" line of the benchmark.
# The project itself stays pure Python; this measures what compiling would buy.
# Needs a C compiler and PyPI access (mypy and setuptools go into .bench/mypyc-venv).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
uv="${UV:-$(command -v uv || echo /tmp/uvtool/bin/uv)}"
out="$root/.bench/mypyc"
venv="$root/.bench/mypyc-venv"
rm -rf "$out"
mkdir -p "$out/matching_compiled"
for f in __init__ book order events types; do
    sed 's/services\.matching\.domain/matching_compiled/g' \
        "$root/services/matching/domain/$f.py" > "$out/matching_compiled/$f.py"
done
if [ ! -x "$venv/bin/mypyc" ]; then
    "$uv" venv -q --python "$root/.venv/bin/python" "$venv"
    "$uv" pip install -q --python "$venv/bin/python" mypy==2.4.1 setuptools==84.2.1
fi
cd "$out"
# Own config: the project's pyproject names a pydantic plugin this venv does not have.
printf '[mypy]\nstrict = True\n' > mypyc.ini
"$venv/bin/mypyc" --config-file mypyc.ini matching_compiled/book.py matching_compiled/order.py \
    matching_compiled/events.py matching_compiled/types.py > build.log 2>&1 \
    || { tail -20 build.log; exit 1; }
echo "built $(ls "$out"/matching_compiled/*.so | wc -l) extension modules in $out"
