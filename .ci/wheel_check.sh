#!/usr/bin/env bash
# The release wheels' recipe, proved without docker: cibuildwheel builds the manylinux wheels inside
# containers, which this machine cannot pull, so this script
#   1. has cibuildwheel read and validate [tool.cibuildwheel] of pyproject.toml offline
#      (--print-build-identifiers: unknown or malformed options fail here) and checks the list of
#      wheels it would build (CPython 3.10-3.13, manylinux x86_64 and aarch64) and that this host's
#      interpreter is one of them;
#   2. builds that one wheel here, from a copy of the project as cibuildwheel does (python -m build
#      --wheel, cibuildwheel's build-frontend), and checks its tag;
#   3. installs it with its test-extras into a fresh venv and runs the test-command of the
#      configuration on it, word for word, from an empty folder (so the installed wheel is tested,
#      not the sources), as cibuildwheel does in its test venv.
# The wheel is not repaired by auditwheel (that needs the manylinux image); its tag stays linux_*.
#
# Usage: .ci/wheel_check.sh            (PYTHON selects the interpreter, default python3)
# Needs: PyPI (build isolation, the test extra; cibuildwheel and build unless that interpreter has them).
# Takes about 2.5 minutes on two busy cores (most of it the compile and the test extra's install).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
T0=$SECONDS
step() { echo "== wheel check [$((SECONDS - T0))s]: $1"; }

step "cibuildwheel reads [tool.cibuildwheel]"
# the tools (cibuildwheel, build) from the interpreter if it has them, else from a venv of their own
TOOLS=$PY
if ! "$PY" -c "import cibuildwheel, build" 2>/dev/null; then
  "$PY" -m venv "$WORK/tools"
  "$WORK/tools/bin/python" -m pip install -q cibuildwheel build
  TOOLS=$WORK/tools/bin/python
fi
IDS=$("$TOOLS" -m cibuildwheel --print-build-identifiers --platform linux)
WANT=$(for arch in x86_64 aarch64; do for v in 310 311 312 313; do echo "cp$v-manylinux_$arch"; done; done)
if [ "$(sort <<<"$IDS")" != "$(sort <<<"$WANT")" ]; then
  echo "cibuildwheel would build:"; echo "$IDS"; echo "expected:"; echo "$WANT"; exit 1
fi
HOST_ID=$("$PY" -c 'import platform, sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}-manylinux_{platform.machine()}")')
echo "$(wc -l <<<"$IDS") wheels configured; this host builds $HOST_ID"
grep -qx "$HOST_ID" <<<"$IDS" || { echo "$HOST_ID is not among the configured wheels"; exit 1; }

step "build the $HOST_ID wheel from a copy of the project"
mkdir "$WORK/project"
if git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
  git -C "$ROOT" ls-files -z --cached --others --exclude-standard \
    | (cd "$ROOT" && xargs -0 sh -c 'for f; do [ -f "$f" ] && printf "%s\0" "$f"; done' sh) \
    | tar -C "$ROOT" --null -T - -cf - | tar -C "$WORK/project" -xf -
else
  tar -C "$ROOT" --exclude=.git --exclude='.venv*' --exclude=build --exclude=dist -cf - . | tar -C "$WORK/project" -xf -
fi
env -u SPRINT_CONTROL_PURE_PYTHON "$TOOLS" -m build --wheel --outdir "$WORK/dist" "$WORK/project" >"$WORK/build.log" 2>&1 \
  || { tail -40 "$WORK/build.log"; exit 1; }
WHEEL=$(ls "$WORK"/dist/*.whl)
TAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
case "$(basename "$WHEEL")" in
  sprint_control-*-"$TAG"-"$TAG"-linux_*.whl) echo "built $(basename "$WHEEL")" ;;
  *) echo "unexpected wheel $(basename "$WHEEL"): expected a $TAG linux wheel"; exit 1 ;;
esac

step "install it with its test-extras into a fresh venv"
EXTRAS=$("$PY" - "$WORK/project/pyproject.toml" <<'EOF'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print(",".join(tomllib.load(f)["tool"]["cibuildwheel"]["test-extras"]))
EOF
)
"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q "$WHEEL[$EXTRAS]"

step "run the configuration's test-command on the installed wheel"
TEST_COMMAND=$("$PY" - "$WORK/project/pyproject.toml" "$WORK/project" <<'EOF'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    cmd = tomllib.load(f)["tool"]["cibuildwheel"]["test-command"]
cmd = " && ".join(cmd) if isinstance(cmd, list) else cmd  # cibuildwheel joins a list the same way
print(cmd.replace("{project}", sys.argv[2]).replace("{package}", sys.argv[2]))
EOF
)
echo "\$ $TEST_COMMAND"
mkdir "$WORK/cwd"
(cd "$WORK/cwd" && env -u SPRINT_CONTROL_PURE_PYTHON VIRTUAL_ENV="$WORK/venv" PATH="$WORK/venv/bin:$PATH" \
  sh -c "$TEST_COMMAND")

step "done: the configuration is valid and its test-command passes on the $HOST_ID wheel"
