#!/usr/bin/env bash
# Prepare the wheels folder that bench/gpu_session.sh installs offline on a GPU node.
#
#   bash bench/gpu_wheels.sh [DIR]          # default DIR: wheels/ (ignored by git: *.whl)
#
# The node's image (Python 3.12, CuPy, NumPy, SciPy, pyarrow, scikit-learn, numba, pytest,
# hypothesis, pyyaml, click, cloudpickle, fsspec, toolz, jinja2, msgpack, psutil,
# sortedcontainers, urllib3, packaging ...) lacks the packages below; they are fetched here
# as binary wheels for CPython 3.12 on manylinux x86-64, each without its dependencies
# (--no-deps: the list names every one that is missing there), pinned to the versions
# installed in this environment where there are any.  Then every wheel's Requires-Dist is
# checked against the folder and the image's packages, and the total size against the
# 64 MiB a device call may carry.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-wheels}
PYVER=${PYVER:-3.12}

# cloudpickle and toolz are on the image too, in versions not checked: carried (pure Python, small) so dask gets its own.
PKGS=(array-api-compat soundfile cffi pycparser pyloudnorm dask distributed partd locket tornado tblib zict cloudpickle toolz av array-api-strict pyebur128)

# The project's build backend (pip install --no-build-isolation on the node): the image has both,
# carried anyway (unpinned: the newest) so the build does not hang on their versions there.
BUILD=(setuptools wheel)

mkdir -p "$DEST"
SPECS=$(python3 - "${PKGS[@]}" <<'EOF'
import importlib.metadata as md, sys
out = []
for name in sys.argv[1:]:
    try:
        out.append(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        out.append(name)
print(" ".join(out))
EOF
)
echo "gpu_wheels: downloading into $DEST: $SPECS"
PLATFORMS=()
for p in manylinux_2_39_x86_64 manylinux_2_35_x86_64 manylinux_2_34_x86_64 manylinux_2_31_x86_64 manylinux_2_28_x86_64 \
         manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64 any; do
  PLATFORMS+=(--platform "$p")
done
# shellcheck disable=SC2086  # SPECS is a list of words
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  "${PLATFORMS[@]}" -d "$DEST" $SPECS "${BUILD[@]}"

python3 - "$DEST" <<'EOF'
import email.parser, pathlib, re, sys, zipfile

dest = pathlib.Path(sys.argv[1])
# On the GPU image already (bench/gpu_session.sh's target): names as pip normalises them.
image = set(
    """numpy scipy pyarrow scikit-learn numba llvmlite cupy-cuda13x pytest hypothesis pyyaml click cloudpickle fsspec
    toolz jinja2 markupsafe msgpack psutil sortedcontainers urllib3 packaging setuptools wheel typing-extensions
    attrs joblib threadpoolctl pluggy iniconfig pygments importlib-metadata zipp six python-dateutil""".split()
)
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
wheels = sorted(dest.glob("*.whl"))
have = {norm(w.name.split("-")[0]) for w in wheels}
names = {}
for w in wheels:
    names.setdefault(norm(w.name.split("-")[0]), []).append(w.name)
dupes = {k: v for k, v in names.items() if len(v) > 1}
missing = set()
env = {"python_version": "3.12", "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
       "implementation_name": "cpython", "platform_python_implementation": "CPython", "os_name": "posix"}
for w in wheels:
    with zipfile.ZipFile(w) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        msg = email.parser.Parser().parsestr(z.read(meta).decode())
    for req in msg.get_all("Requires-Dist") or []:
        spec, _, marker = req.partition(";")
        if "extra" in marker:
            continue
        if marker.strip():
            try:
                from packaging.markers import Marker
                if not Marker(marker.strip()).evaluate(env):
                    continue
            except Exception:
                pass
        name = norm(re.split(r"[\s<>=!~\[(]", spec.strip(), maxsplit=1)[0])
        if name not in have and name not in image:
            missing.add(f"{name} (for {w.name.split('-')[0]})")
size = sum(w.stat().st_size for w in wheels)
print(f"gpu_wheels: {len(wheels)} wheels, {size / 2**20:.1f} MiB in {dest}")
for w in wheels:
    print(f"  {w.name}")
if dupes:
    print(f"gpu_wheels: more than one version of {sorted(dupes)}: remove all but one (pip refuses two)")
if missing:
    print("gpu_wheels: needed but neither here nor on the image: " + ", ".join(sorted(missing)))
if size > 60 * 2**20:
    print("gpu_wheels: over 60 MiB: a device call carries at most 64 MiB with the working tree")
sys.exit(1 if (dupes or missing or size > 60 * 2**20) else 0)
EOF
echo "gpu_wheels: done; carry '$DEST' to the GPU node and run: bash bench/gpu_session.sh"
