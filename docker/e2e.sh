#!/usr/bin/env bash
# End-to-end check of the compose demo: build and start it, wait until the
# coordinator and both parties are healthy, check that each container holds
# only its own key, classify real test images through the PRIVATE REST path
# from this machine (the image is secret-shared and sealed here, to party keys
# checked against the deployment's CA; the containers see sealed shares only),
# check that every secure class equals the plaintext model's, classify one PNG
# with `mpcvit classify`, and tear everything down (always, via trap; volumes
# included).
#
#   docker/e2e.sh                                   # BASE_IMAGE=python:3.11-slim
#   BASE_IMAGE=localbase/python:3.11 TORCH_WHEEL_DIR=/path/to/wheels docker/e2e.sh   # offline: docker/README.md
#
# Environment (all optional):
#   BASE_IMAGE       base image of docker/Dockerfile        (default python:3.11-slim)
#   OFFLINE_DOCKER   a script of yours, run first when Docker, compose or BASE_IMAGE is missing (on a
#                    machine without a container registry: the steps of docker/README.md's "Start it":
#                    compose plugin, dockerd, BASE_IMAGE from Debian packages)  (default: none)
#   PYTHON           host interpreter with mpcvit installed (default .venv/bin/python)
#   MPCVIT_PORT      host port of the coordinator           (default 8000, or a free one if 8000 is taken)
#   E2E_IMAGES       how many test images to classify       (default 4)
#   E2E_MODEL        model name (or MPCVIT_MODEL)           (default: mpcvit demo's choice; sets
#                    MPCVIT_DATASET / MPCVIT_MODEL of docker-compose.yml to match)
#   TORCH_WHEEL_DIR  a folder holding torch's CPU wheel, copied into the build context (docker/wheels/)
#                    and removed from there on exit (default: none; the image then installs torch from
#                    the PyTorch CPU index)
#   E2E_TIMEOUT      seconds to wait for health             (default 600)
#   E2E_KEEP=1       leave the stack running (no teardown)
# Exit status 0 only if every check passed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

export BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim}
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-mpcvit-e2e}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
IMAGES=${E2E_IMAGES:-4}
TIMEOUT=${E2E_TIMEOUT:-600}
TORCH_WHEEL_DIR=${TORCH_WHEEL_DIR:-}
OFFLINE_DOCKER=${OFFLINE_DOCKER:-}
WORK=$(mktemp -d -t mpcvit-e2e.XXXXXX)

BGPID=
COPIED_WHEEL=  # a wheel this script copied into docker/wheels/ (removed on exit; one that was there stays)
say() { printf '\n== %s\n' "$*"; }
remove_copied_wheel() { if [ -n "$COPIED_WHEEL" ]; then rm -f "$COPIED_WHEEL"; COPIED_WHEEL=; fi; }
# Run a long command in the background and wait for it, so Ctrl-C / TERM reach the trap at once.
run() { "$@" & BGPID=$!; wait "$BGPID"; local rc=$?; BGPID=; return "$rc"; }

teardown() {
  local code=$?
  if [ -n "$BGPID" ]; then kill "$BGPID" 2>/dev/null || true; wait "$BGPID" 2>/dev/null || true; fi
  if [ "$code" -ne 0 ]; then
    say "FAILED (exit $code): container status and logs"
    docker compose ps -a || true
    docker compose logs --no-color --tail 60 || true
  fi
  if [ "${E2E_KEEP:-0}" = 1 ]; then
    say "E2E_KEEP=1: leaving the stack up (docker compose -p $COMPOSE_PROJECT_NAME down -v to stop)"
  else
    say "tearing down"
    docker compose down -v --remove-orphans --timeout 20 || true
  fi
  rm -rf "$WORK"
  remove_copied_wheel
  exit "$code"
}

# -- prerequisites ------------------------------------------------------------------
[ -x "$PYTHON" ] || { echo "no $PYTHON: run 'make venv' first (the host classifies the images)" >&2; exit 2; }
if ! docker info >/dev/null 2>&1 || ! docker compose version >/dev/null 2>&1 \
   || ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  if [ -n "$OFFLINE_DOCKER" ] && [ -f "$OFFLINE_DOCKER" ]; then
    say "starting Docker and building $BASE_IMAGE with $OFFLINE_DOCKER"
    BASE_IMAGE=$BASE_IMAGE bash "$OFFLINE_DOCKER"
  fi
fi
docker compose version >/dev/null

# torch's CPU wheel through the build context, when it is on this machine.
shopt -s nullglob
wheels=()
[ -n "$TORCH_WHEEL_DIR" ] && wheels=("$TORCH_WHEEL_DIR"/torch-2.13.0+cpu-cp311-*.whl)
if [ ${#wheels[@]} -gt 0 ] && [ ! -f "docker/wheels/$(basename "${wheels[0]}")" ]; then
  COPIED_WHEEL="docker/wheels/$(basename "${wheels[0]}")"
  trap 'code=$?; remove_copied_wheel; rm -rf "$WORK"; exit "$code"' EXIT  # until teardown's trap replaces it
  cp "${wheels[0]}" docker/wheels/
fi
shopt -u nullglob

if [ -z "${MPCVIT_PORT:-}" ]; then
  MPCVIT_PORT=$("$PYTHON" - <<'EOF'
import socket
s = socket.socket()
try:
    s.bind(("0.0.0.0", 8000)); print(8000)
except OSError:
    s.bind(("0.0.0.0", 0)); print(s.getsockname()[1])
finally:
    s.close()
EOF
)
fi
export MPCVIT_PORT
URL=http://127.0.0.1:$MPCVIT_PORT

# The model: E2E_MODEL, else mpcvit demo's default (Fashion-MNIST when its data and checkpoint are here,
# else digits); the stack serves that model's dataset directory and preloads it.
read -r MODEL_DATASET MODEL_NAME < <("$PYTHON" - "${E2E_MODEL:-${MPCVIT_MODEL:-}}" <<'EOF'
import sys
from mpcvit.commands.demo import default_model, default_models_dir, find_checkpoint
root = default_models_dir()
ckpt = find_checkpoint(root, sys.argv[1] or default_model(root))
print(ckpt.parent.name, ckpt.name)
EOF
)
[ -n "${MODEL_NAME:-}" ] || { echo "no model to serve (see the error above)" >&2; exit 2; }
export MPCVIT_DATASET=$MODEL_DATASET MPCVIT_MODEL=$MODEL_NAME

trap teardown EXIT
trap 'exit 130' INT TERM

# -- up -----------------------------------------------------------------------------
say "docker compose up -d --build (BASE_IMAGE=$BASE_IMAGE, project $COMPOSE_PROJECT_NAME, port $MPCVIT_PORT, model $MPCVIT_DATASET/$MPCVIT_MODEL)"
start=$(date +%s)
run docker compose up -d --build

say "waiting for the coordinator and both parties to be healthy"
deadline=$((start + TIMEOUT))
until [ "$(docker inspect -f '{{.State.Health.Status}}' "$(docker compose ps -q coordinator)" 2>/dev/null)" = healthy ]; do
  for svc in dealer party0 party1 coordinator; do
    state=$(docker inspect -f '{{.State.Status}}' "$(docker compose ps -aq "$svc")" 2>/dev/null || echo missing)
    if [ "$state" = exited ] || [ "$state" = dead ]; then echo "$svc is $state" >&2; exit 1; fi
  done
  [ "$(date +%s)" -lt "$deadline" ] || { echo "not healthy after ${TIMEOUT}s" >&2; exit 1; }
  sleep 3
done
docker compose ps
say "healthy after $(( $(date +%s) - start ))s: $URL/v1/health"
"$PYTHON" -c "import json, sys, urllib.request; print(json.dumps(json.load(urllib.request.urlopen(sys.argv[1])), indent=1))" "$URL/v1/health"

# -- separated secrets ------------------------------------------------------------------
say "each container sees only its own key (and no CA key)"
for svc in dealer party0 party1 coordinator; do
  files=$(docker compose exec -T "$svc" python3 -c "import os; print(' '.join(sorted(os.listdir('/certs')) + [os.path.join(d, f) for d, _, fs in os.walk('/pki') for f in fs]))")
  echo "$svc: /certs holds $files"
  for f in $files; do
    case "$f" in
      "$svc.key" | "$svc.pem" | "$svc.csr" | "$svc.x25519" | ca.pem) ;;
      *) echo "$svc can read $f: not its own" >&2; exit 1 ;;
    esac
  done
  case " $files " in *" $svc.key "*) ;; *) echo "$svc has no $svc.key" >&2; exit 1 ;; esac
done

# The client verifies the parties' sealing keys against the CA certificate, which it gets out of band (here: from
# the coordinator's volume on this host), never from the coordinator's API.
docker compose cp coordinator:/certs/ca.pem "$WORK/ca.pem"

# -- classify -----------------------------------------------------------------------
say "classifying $IMAGES test images privately through $URL (mpcvit demo --server --ca)"
run "$PYTHON" -m mpcvit.cli demo --server "$URL" --ca "$WORK/ca.pem" --images "$IMAGES" --json "$WORK/demo.json" \
  --save-images "$WORK/images" --model "$MPCVIT_MODEL"

say "checking the answers"
"$PYTHON" - "$WORK/demo.json" "$IMAGES" <<'EOF'
import json, sys
result = json.load(open(sys.argv[1]))
rows = result["rows"]
assert len(rows) == int(sys.argv[2]), f"expected {sys.argv[2]} rows, got {len(rows)}"
for r in rows:
    assert r["private_class"] == r["plaintext_class"], f"image {r['index']}: 2PC {r['private_class']} != plaintext {r['plaintext_class']}"
    assert r["rounds"] and r["rounds"] > 0 and r["bytes"] and r["bytes"] > 0, f"image {r['index']}: no costs {r}"
print(f"ok: {len(rows)}/{len(rows)} secure classes equal the plaintext model's ({result['model']})")
EOF

say "one PNG through 'mpcvit classify' (the command docker/README.md shows)"
model=$("$PYTHON" -c "import json, sys; print(json.load(open(sys.argv[1]))['model'])" "$WORK/demo.json")
png=$(ls "$WORK"/images/*.png | head -n 1)
echo "mpcvit classify $(basename "$png") --server $URL --model $model --ca ca.pem"
"$PYTHON" -m mpcvit.cli classify "$png" --server "$URL" --model "$model" --ca "$WORK/ca.pem" | tee "$WORK/classify.txt"
expected=$("$PYTHON" -c "import json, sys; print(json.load(open(sys.argv[1]))['rows'][0]['plaintext_class'])" "$WORK/demo.json")
grep -qF -- "$expected" "$WORK/classify.txt" || { echo "classify did not answer '$expected'" >&2; exit 1; }

say "PASS: compose demo classified $IMAGES images privately, all equal to the plaintext model"
