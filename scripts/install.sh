#!/usr/bin/env bash
# The install steps of Ducho, in one place: `make install` (so every CI run), Dockerfile.cpu and Dockerfile.cuda
# call this script.
#
#   scripts/install.sh [--venv DIR] [--editable] [--extras LIST] [--python PYTHON] [--no-compile]
#
#   --venv DIR       create DIR with PYTHON when it has no interpreter, and install into it (default: PYTHON itself)
#   --editable       pip install -e . (a checkout); default: a regular install of the project (the image)
#   --extras LIST    pip extras (default: text,vision,audio,handcrafted,open_clip,onnx,tensorflow,ray,dev)
#   --python PYTHON  the interpreter (default: python3)
#   --no-compile     no byte-compiling of the installed packages (2.5 of the ~5 minutes a fresh install takes on
#                    2 cores; a checkout compiles the modules it imports when it first does): `make` uses it
#
# System packages are installed with apt-get only when missing: a C compiler (webrtcvad, resemblyzer's dependency,
# is built from source) and, with the dev extra, Debian's chromium (tests/test_report.py opens the report page in
# it, headless).
set -euo pipefail

python=python3
venv=""
editable=""
compile=""
extras="text,vision,audio,handcrafted,open_clip,onnx,tensorflow,ray,dev"
while [ $# -gt 0 ]; do
  case "$1" in
    --venv) venv="$2"; shift 2 ;;
    --editable) editable="-e"; shift ;;
    --extras) extras="$2"; shift 2 ;;
    --python) python="$2"; shift 2 ;;
    --no-compile) compile="--no-compile"; shift ;;
    *) echo "install.sh: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."

# 1. system packages, only those missing
missing=()
command -v gcc >/dev/null || missing+=(gcc libc6-dev)
case ",$extras," in *,dev,*) command -v chromium >/dev/null || missing+=(chromium) ;; esac
if [ ${#missing[@]} -gt 0 ]; then
  echo "install.sh: apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  rm -rf /var/lib/apt/lists/*
fi

# 2. the interpreter (a virtual environment for a checkout)
if [ -n "$venv" ]; then
  test -x "$venv/bin/python" || "$python" -m venv "$venv"
  python="$venv/bin/python"
fi

# 3. the project and its extras (pinned in pyproject.toml)
"$python" -m pip install --quiet --upgrade pip
"$python" -m pip install --quiet $compile $editable ".[$extras]"

# 4. musicnn's checkpoints (TensorFlow audio backend); --no-deps: it declares numpy<1.17 but runs on today's
#    keras-hub (TensorFlow text backend); --no-deps: its tensorflow-text pulls the full tensorflow over tensorflow-cpu
case ",$extras," in
  *,tensorflow,*|*,all,*) "$python" -m pip install --quiet $compile --no-deps musicnn==0.1.0 keras-hub==0.32.0 ;;
esac

# 5. the result imports and its CLI answers (a broken step fails here, not at the first run)
"$python" -c "import ducho, ducho.config.schema, ducho.backends.registry"
"$python" -m ducho --version
