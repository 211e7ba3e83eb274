#!/usr/bin/env bash
# Walk `ray up cluster-local.yaml` on a real SSH host: this machine, over loopback, as a new user would.
#
#   sudo bash tests/cluster/ray_up_loopback.sh [--keep-user]     # Linux, root; ~4-5 min on 2 cores
#
# It creates a dedicated local user (unlearn-rayup), authorizes a fresh key for it, starts sshd on 127.0.0.1
# if none listens there, copies cluster-local.yaml changed ONLY in its hosts (head 127.0.0.1, no workers),
# ssh_user and ssh_private_key, runs `ray up` with it (setup installs the project and torch into the user's
# venv exactly as on a real host), submits a short search as a Ray Job to the head's dashboard, checks that
# the job SUCCEEDED and reads its log, checks that the search's metrics were on the head's metrics endpoint
# while it ran, runs `ray down`, and checks that nothing of the user is left running.
# Token auth stays on: `ray up` copies a token made for this run (in a private HOME, so yours is untouched)
# to the user, and the job client uses the same one. SSH, the job client and the dashboard use 127.0.0.1
# only; Ray's own processes talk on this machine's address, which never leaves it.
#
# Needs: root (useradd, sshd), apt-get when sshd or rsync is missing (Debian/Ubuntu), free ports 6379 and
# 8265, and the repo's venv (`pip install -e '.[test]'`; override with RAY=/path/to/ray). The user's pip
# gets your pip's settings (`pip config list`), so the setup installs from the index your pip uses.
# Prints each phase's time; exits non-zero on any failure. By default the user and its home (the venv,
# several GB) are removed at the end; --keep-user keeps them, and a rerun with --keep-user reuses the venv.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RAY=${RAY:-$ROOT/.venv/bin/ray}
PY=$(dirname "$RAY")/python
TEST_USER=unlearn-rayup
KEEP_USER=0
[ "${1:-}" = "--keep-user" ] && KEEP_USER=1

die() { echo "ray_up_loopback: FAIL: $*" >&2; exit 1; }
say() { echo "ray_up_loopback: $*"; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

[ "$(uname -s)" = Linux ] || die "needs Linux"
[ "$(id -u)" = 0 ] || die "needs root (it creates a user and may start sshd)"
[ -x "$RAY" ] && [ -x "$PY" ] || die "no ray at $RAY (create the venv: pip install -e '.[test]', or set RAY=)"
for port in 6379 8265; do
    listening "$port" && die "127.0.0.1:$port is taken (another Ray runs here?); stop it first"
done

T_START=$(date +%s)
WORK=$(mktemp -d /tmp/ray-up-loopback.XXXXXX)
chmod 700 "$WORK"
UP_DONE=0 DOWN_DONE=0 SSHD_PID="" WATCH_PID=""

cleanup() {
    local rc=$?
    set +e
    [ -n "$WATCH_PID" ] && kill "$WATCH_PID" 2> /dev/null
    if [ "$UP_DONE" = 1 ] && [ "$DOWN_DONE" = 0 ]; then
        say "cleanup: ray down"
        (cd "$ROOT" && HOME=$WORK/home RAY_TMPDIR=$WORK/ray-local "$RAY" down -y "$WORK/cluster.yaml" \
            > "$WORK/ray-down-cleanup.log" 2>&1)
    fi
    for _ in $(seq 15); do pgrep -u "$TEST_USER" > /dev/null 2>&1 || break; sleep 1; done
    if id "$TEST_USER" > /dev/null 2>&1 && pgrep -u "$TEST_USER" > /dev/null; then
        say "cleanup: stopping what is left of $TEST_USER"
        pkill -u "$TEST_USER"; sleep 2; pkill -9 -u "$TEST_USER"
    fi
    [ -n "$SSHD_PID" ] && kill "$SSHD_PID" 2> /dev/null && say "stopped the sshd this run started"
    # ray up's ssh connection sharing directory (ControlPath=/tmp/ray_ssh_<user>/<cluster>/%C)
    local control
    control=$(grep -aom1 'ControlPath=/tmp/ray_ssh_[0-9a-f]*/[0-9a-f]*' "$WORK/ray-up.log" 2> /dev/null)
    [ -n "$control" ] && rm -rf "${control#ControlPath=}" && rmdir --ignore-fail-on-non-empty \
        "$(dirname "${control#ControlPath=}")"
    if [ "$KEEP_USER" = 0 ] && id "$TEST_USER" > /dev/null 2>&1; then
        userdel -r "$TEST_USER" > /dev/null 2>&1
        rm -rf "/tmp/ray-$TEST_USER"
    fi
    if [ "$rc" = 0 ]; then
        rm -rf "$WORK"
    else
        say "logs kept in $WORK (ray-up.log, job.log, ray-down.log)"
    fi
    exit "$rc"
}
trap cleanup EXIT

# --- the host: sshd and rsync (ray up's file sync), a fresh user with a key ---------------------------
missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v rsync > /dev/null || missing+=(rsync)
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" > "$WORK/apt.log" 2>&1 \
        || { apt-get update -q > /dev/null 2>&1 && \
             DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" > "$WORK/apt.log" 2>&1; } \
        || die "apt-get install ${missing[*]} failed (see $WORK/apt.log)"
fi

if id "$TEST_USER" > /dev/null 2>&1 && [ "$KEEP_USER" = 0 ]; then
    pgrep -u "$TEST_USER" > /dev/null && die "$TEST_USER has processes running; stop them first"
    userdel -r "$TEST_USER" > /dev/null 2>&1 || true   # a leftover from an interrupted run: start fresh
fi
if ! id "$TEST_USER" > /dev/null 2>&1; then
    useradd -m -s /bin/bash "$TEST_USER"
    usermod -p '*' "$TEST_USER"   # no password, but not locked: sshd refuses keys for a locked account
fi
USER_HOME=$(getent passwd "$TEST_USER" | cut -d: -f6)
# Ray keeps its sockets and logs under $RAY_TMPDIR/ray (default /tmp/ray), which another user's Ray on
# this machine may own: give this user its own.
touch "$USER_HOME/.bashrc"
grep -q RAY_TMPDIR "$USER_HOME/.bashrc" \
    || sed -i "1i export RAY_TMPDIR=/tmp/ray-$TEST_USER  # /tmp/ray may belong to another user's Ray" \
        "$USER_HOME/.bashrc"
mkdir -p "/tmp/ray-$TEST_USER" && chown "$TEST_USER:" "/tmp/ray-$TEST_USER"
# No Prometheus on the head: Ray's launcher downloads it from GitHub, reads its config under /tmp/ray (not
# RAY_TMPDIR), and it would outlive `ray down`. The search's metrics are read from Ray's endpoint instead.
grep -q UNLEARN_PROMETHEUS "$USER_HOME/.bashrc" \
    || sed -i "1i export UNLEARN_PROMETHEUS=0  # cluster-local.yaml's Prometheus: not in this walk" \
        "$USER_HOME/.bashrc"
# The user's pip uses the index (and certificates, find-links, constraints) that your pip uses.
mkdir -p "$USER_HOME/.config/pip"
"$PY" -m pip config list 2> /dev/null | "$PY" -c '
import re, sys, configparser
conf = configparser.ConfigParser(interpolation=None)
lines = [re.match(r"^(:env:|[\w-]+)\.([\w-]+)=(.*)$", line.strip()) for line in sys.stdin]
for m in sorted(filter(None, lines), key=lambda m: m.group(1) == ":env:"):  # PIP_* beat the files
    section = "global" if m.group(1) == ":env:" else m.group(1)
    conf.setdefault(section, {})[m.group(2)] = m.group(3).strip("\x27\"")
conf.write(sys.stdout)' > "$USER_HOME/.config/pip/pip.conf"
ssh-keygen -q -t ed25519 -N '' -C "$TEST_USER@loopback" -f "$WORK/key"
install -d -m 700 -o "$TEST_USER" -g "$TEST_USER" "$USER_HOME/.ssh"
install -m 600 -o "$TEST_USER" -g "$TEST_USER" "$WORK/key.pub" "$USER_HOME/.ssh/authorized_keys"
chown -R "$TEST_USER:" "$USER_HOME/.config"

if ! listening 22; then
    mkdir -p /run/sshd
    ssh-keygen -q -t ed25519 -N '' -f "$WORK/host_key"
    cat > "$WORK/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port 22
HostKey $WORK/host_key
PidFile $WORK/sshd.pid
AllowUsers $TEST_USER
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
UsePAM no
EOF
    /usr/sbin/sshd -D -f "$WORK/sshd_config" -E "$WORK/sshd.log" &
    SSHD_PID=$!
    for _ in $(seq 50); do listening 22 && break; sleep 0.1; done
    say "started sshd on 127.0.0.1:22 (pid $SSHD_PID)"
fi
ssh -i "$WORK/key" -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
    -o LogLevel=ERROR "$TEST_USER@127.0.0.1" true || die "ssh $TEST_USER@127.0.0.1 with the new key failed"

# --- the cluster file: cluster-local.yaml with only hosts, user and key changed --------------------------
mkdir -p "$WORK/home" "$WORK/ray-local"
HOME=$WORK/home RAY_AUTH_MODE=token "$RAY" get-auth-token --generate > /dev/null
"$PY" - "$ROOT/cluster-local.yaml" "$WORK/cluster.yaml" "$TEST_USER" "$WORK/key" <<'EOF'
import sys, yaml
src, dst, user, key = sys.argv[1:]
config = yaml.safe_load(open(src))  # everything else stays as shipped
config["provider"].update(head_ip="127.0.0.1", worker_ips=[])
config["auth"].update(ssh_user=user, ssh_private_key=key)
yaml.safe_dump(config, open(dst, "w"), sort_keys=False)
EOF

cd "$ROOT"   # file_mounts syncs "." (this checkout) to the head
export HOME=$WORK/home RAY_TMPDIR=$WORK/ray-local RAY_AUTH_MODE=token
export RAY_ADDRESS=http://127.0.0.1:8265

T_HOST=$(( $(date +%s) - T_START ))

# --- ray up ------------------------------------------------------------------------------------------------
say "ray up (setup installs the project into $TEST_USER's venv; the log: $WORK/ray-up.log)"
t0=$(date +%s)
UP_DONE=1
"$RAY" up -y --no-config-cache --disable-usage-stats --log-style record "$WORK/cluster.yaml" 2>&1 \
    | tee "$WORK/ray-up.log" || die "ray up failed"
T_UP=$(( $(date +%s) - t0 ))
grep -q "warning: ulimit -n 65536 failed" "$WORK/ray-up.log" \
    && say "the ulimit warning showed in ray up's output (the hard limit here is below 65536)"

# --- a short search as a Ray Job -------------------------------------------------------------------------
# --address auto: a Ray Job's driver finds its cluster through RAY_ADDRESS anyway. The search writes to
# ./runs inside the job's temporary working directory, gone with the cluster: a real search gives --storage.
JOB=rayup-loopback-$(date +%s)
say "job $JOB"
# While the job runs, scrape every metrics endpoint Ray lists for Prometheus (its service discovery file) and
# keep the last scrape that had the search's metrics: they are the driver's, and go when it exits.
"$PY" - "/tmp/ray-$TEST_USER/ray/prom_metrics_service_discovery.json" "$WORK/metrics.txt" <<'EOF' &
import json, sys, time, urllib.request
sd, out = sys.argv[1:]
while True:
    try:
        targets = [t for group in json.load(open(sd)) for t in group["targets"]]
    except (OSError, ValueError):
        targets = []
    lines = []
    for target in targets:
        try:
            text = urllib.request.urlopen(f"http://{target}/metrics", timeout=5).read().decode()
        except OSError:
            continue
        lines += [line for line in text.splitlines() if line.startswith("ray_unlearn_search_")]
    if lines:
        open(out, "w").write("\n".join(lines) + "\n")
    time.sleep(2)
EOF
WATCH_PID=$!
t0=$(date +%s)
# As the README runs it: no --address (the job's RAY_ADDRESS names the cluster), a --storage outside the job's
# temporary working folder.
timeout 1800 "$RAY" job submit --submission-id "$JOB" --working-dir . -- \
    python -m tuner.search scrub --num-samples 2 --final-seeds 2 --top-k 1 --storage '~/unlearn-runs' \
    || say "ray job submit exited non-zero (the status below decides)"
T_JOB=$(( $(date +%s) - t0 ))
"$RAY" job logs "$JOB" > "$WORK/job.log" 2>&1 || die "ray job logs $JOB failed"
STATUS=$("$RAY" job status "$JOB" 2>&1 | tee "$WORK/job-status.log")
echo "$STATUS" | grep -Eq "Job '$JOB' succeeded|: SUCCEEDED" \
    || { tail -40 "$WORK/job.log"; die "job $JOB did not succeed: $STATUS"; }
grep -q "^experiment: " "$WORK/job.log" || die "the job log has no 'experiment:' line of the search"
grep -q "^Ray: joined" "$WORK/job.log" || die "the job's search did not join the cluster in RAY_ADDRESS"
kill "$WATCH_PID" 2> /dev/null; WATCH_PID=""
[ -s "$WORK/metrics.txt" ] || die "no ray_unlearn_search_* metrics on the head's metrics endpoints during the job"
# e.g. "completed=2 stopped=0 diverged=0 error=0 running=0"
TRIALS=$(sed -nE 's/^ray_unlearn_search_trials\{.*status="([a-z]+)".*\} ([0-9.e+-]+)$/\1=\2/p' "$WORK/metrics.txt" \
    | tr '\n' ' ')
BEST=$(sed -nE 's/^ray_unlearn_search_best_objective\{.*objective="([a-z_]+)".*\} ([0-9.e+-]+)$/\1=\2/p' \
    "$WORK/metrics.txt" | tr '\n' ' ')
# Ray's GCS message (autoscaler v2) and the v1 autoscaler's, which cluster-local.yaml runs: here the head is
# listed as 127.0.0.1 but Ray registers it under this machine's address, so the autoscaler cannot match the two
# and learns no resources for the local node type (docs/monitoring.md). Harmless: the tasks still run.
INFEASIBLE=$(grep -Ec "infeasible resource requests|No available node types can fulfill" "$WORK/job.log" || true)

# --- ray down, and nothing left running --------------------------------------------------------------------
t0=$(date +%s)
"$RAY" down -y "$WORK/cluster.yaml" > "$WORK/ray-down.log" 2>&1 || die "ray down failed (see $WORK/ray-down.log)"
DOWN_DONE=1
T_DOWN=$(( $(date +%s) - t0 ))
# ssh's shared connection (ControlPersist) keeps a session of the user open a few seconds after ray down.
for _ in $(seq 30); do pgrep -u "$TEST_USER" > /dev/null || break; sleep 1; done
if pgrep -u "$TEST_USER" > /dev/null; then
    ps -u "$TEST_USER" -o pid=,args= | head -20
    die "processes of $TEST_USER still run 30 s after ray down (listed above; stopped by the cleanup)"
fi

echo
say "PASS on $(date -u +%F) ($(nproc)-core $(uname -m), Ray $("$RAY" --version | awk '{print $NF}'))"
say "host (sshd, user, key) $T_HOST s, ray up $T_UP s, job $T_JOB s (scrub: 2 trials, top 1, 2 final seeds)," \
    "ray down $T_DOWN s; $(( $(date +%s) - T_START )) s in all"
say "the search's metrics on the head's endpoint, last seen: trials ${TRIALS:-?}; best ${BEST:-none}"
say "'infeasible resource requests' / 'No available node types' lines in the job log: $INFEASIBLE"
