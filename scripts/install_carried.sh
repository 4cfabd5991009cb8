#!/usr/bin/env bash
# Install cotrecipe without network from carried wheels, on top of an existing Python environment that stays
# untouched: the lent GPU machine's image (scripts/gpu_check.sh) or the stand-in for it that
# scripts/offline_install_check.sh builds.
#
#   scripts/install_carried.sh PYTHON WHEELS VENV      # then VENV/bin/cotrecipe, VENV/bin/python
#
# VENV is a new venv (made by PYTHON's own interpreter) whose site-packages comes first and then loads PYTHON's
# site-packages (a .pth line running site.addsitedir, so their own .pth files load too): the image's torch,
# transformers, ... are used as they are. pip's resolver, with --no-index --find-links WHEELS, installs cotrecipe from
# this checkout and takes from WHEELS only what that environment lacks or holds outside a bound of cotrecipe or of a
# carried wheel (scripts/gpu_wheels_recipe.txt); it never uninstalls anything outside VENV. A requirement that neither
# side satisfies stops it with pip's error naming it, and a last line from this script. Then the unsloth set
# (scripts/gpu_wheels_unsloth.txt) without its dependencies.
#
# pip reads no configuration file and no PIP_* variable here (PIP_CONFIG_FILE=/dev/null): a machine's find-links or
# extra index must not feed what the check claims comes from WHEELS. VENV is replaced only if this script made it.
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 PYTHON WHEELS VENV" >&2; exit 2; }
BASE_PY="$1"
WHEELS="$(realpath -e "$2")"
VENV="$(realpath -m "$3")"
cd "$(dirname "$0")/.."
MARK=".cotrecipe-install-carried"

if [ -e "$VENV" ]; then
  [ -e "$VENV/$MARK" ] || { echo "install_carried: $VENV exists and was not made by this script: not touching it" >&2
                            exit 2; }
  rm -rf "$VENV"
fi
"$BASE_PY" -m venv --without-pip "$VENV"
touch "$VENV/$MARK"
PY="$VENV/bin/python"
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# The base environment's site directories, in its own order, after the venv's.
"$BASE_PY" - > "$SITE/_cotrecipe_base_env.pth" <<'PY'
import site
import sys

dirs = [p for p in sys.path if p.rstrip("/").endswith(("site-packages", "dist-packages"))]
for d in dirs:
    print(f"import site; site.addsitedir({d!r})")
PY

pipi() {  # pip install from WHEELS alone
  env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u PIP_CONSTRAINT -u PIP_REQUIREMENT \
    PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 \
    "$PY" -m pip install --no-index --find-links "$WHEELS" --no-cache-dir --no-compile --progress-bar off "$@"
}
# Built from a copy of what the build reads, so no build/ or egg-info lands in the checkout (nor stale files in it).
mkdir "$VENV/src"
cp -r pyproject.toml README.md recipe "$VENV/src/"
echo "install_carried: pip $("$PY" -m pip --version | cut -d' ' -f2) on $("$PY" -c 'import sys; print(sys.version.split()[0])'), wheels from $WHEELS"
pipi "$VENV/src" || { echo "install_carried: cotrecipe's requirements are not met by $BASE_PY's environment plus $WHEELS (pip's error above names the one)" >&2
            exit 1; }
pipi --no-deps -r scripts/gpu_wheels_unsloth.txt || {
  echo "install_carried: the unsloth set (scripts/gpu_wheels_unsloth.txt) is not all in $WHEELS" >&2; exit 1; }

"$PY" -I - "$SITE" <<'PY'
"""Each package cotrecipe runs on, its version and where it comes from: the base environment (the image) or the
venv (a carried wheel)."""
import sys
from importlib.metadata import distribution

site = sys.argv[1]
names = ("torch", "transformers", "accelerate", "peft", "trl", "datasets", "pydantic", "filelock", "fsspec", "pyarrow",
         "typing_extensions", "unsloth", "unsloth_zoo", "bitsandbytes")


def origin(name: str) -> str:
    return "carried" if str(distribution(name).locate_file("")).startswith(site) else "image"


print("install_carried: " + ", ".join(f"{n}=={distribution(n).version} ({origin(n)})" for n in names))
PY
