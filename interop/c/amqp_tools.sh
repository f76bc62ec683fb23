#!/usr/bin/env bash
# librabbitmq's command-line tools (Debian's amqp-tools) against Warren.
#
# Usage: amqp_tools.sh SCENARIO. Exit 0 is a pass, 3 means the scenario
# cannot be expressed with these tools, anything else is a failure.
#
# Each tool is one connection and one channel, so the scenarios sync through
# the broker itself: a consumer is known to be subscribed (and its binding
# made) once it has printed a "ready" message sent straight to its queue.
set -uo pipefail

CONN=(--server "${WARREN_HOST:-127.0.0.1}" --port "${WARREN_PORT:-5672}"
      --username "${WARREN_USER:-guest}" --password "${WARREN_PASSWORD:-guest}")
SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
TMP="$(mktemp -d)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
na() { echo "n/a: $*"; exit 3; }
name() { echo "interop-c-$1-$$-$RANDOM"; }

declare_q() { amqp-declare-queue "${CONN[@]}" "$@" >/dev/null || fail "declare $*"; }
publish() { amqp-publish "${CONN[@]}" "$@" || fail "publish $*"; }
delete_q() { amqp-delete-queue "${CONN[@]}" -q "$1" >/dev/null || fail "delete $1"; }

# get_one Q: one body, polling while the queue is empty (bounded).
get_one() {
    for _ in $(seq 100); do
        if amqp-get "${CONN[@]}" -q "$1" 2>"$TMP/get.err"; then return 0; fi
        grep -q "channel error" "$TMP/get.err" && { cat "$TMP/get.err" >&2; fail "basic.get on $1"; }
        sleep 0.05
    done
    fail "no message on $1"
}

# wait_for FILE TEXT: bounded poll for a consumer's output.
wait_for() {
    for _ in $(seq 200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
    fail "no '$2' in $1: $(cat "$1" 2>/dev/null)"
}

# start_consumer Q OUT COUNT [OPTIONS...]: a background amqp-consume that
# writes each body as a line to OUT; returns once it has taken "ready".
start_consumer() {
    local q="$1" out="$2" count="$3"; shift 3
    # (A lone consumer on q, so the "ready" can only go to it.)
    publish -r "$q" -b ready
    timeout 40 amqp-consume "${CONN[@]}" -q "$q" -c "$count" "$@" "$SELF" __line >"$out" 2>"$out.err" &
    PIDS+=($!)
    wait_for "$out" ready
}

# expect_error CODE TEXT COMMAND...: the command fails with that reply.
expect_error() {
    local code="$1" text="$2"; shift 2
    if "$@" >"$TMP/out" 2>"$TMP/err"; then fail "expected error $code from $*"; fi
    grep -q "error $code, message: $text" "$TMP/err" || fail "expected '$code $text', got: $(cat "$TMP/err")"
}

hello() {
    local q; q="$(name hello)"
    declare_q -q "$q"
    publish -r "$q" -b "Hello World!"
    [ "$(get_one "$q")" = "Hello World!" ] || fail "body"
    delete_q "$q"
}

work_queues() {
    local q; q="$(name tasks)"
    declare_q -d -q "$q"
    for w in w1 w2; do
        timeout 40 amqp-consume "${CONN[@]}" -q "$q" -p 1 "$SELF" __line >"$TMP/$w" 2>"$TMP/$w.err" &
        PIDS+=($!)
    done
    # Both workers are subscribed once each has taken a "ready".
    for _ in $(seq 100); do
        grep -q ready "$TMP/w1" && grep -q ready "$TMP/w2" && break
        publish -r "$q" -b ready
        sleep 0.02
    done
    for i in $(seq 10); do publish -p -r "$q" -b "task $i"; done
    local n1 n2
    for _ in $(seq 200); do
        n1=$(grep -c '^task' "$TMP/w1"); n2=$(grep -c '^task' "$TMP/w2")
        [ $((n1 + n2)) -ge 10 ] && break
        sleep 0.05
    done
    [ $((n1 + n2)) = 10 ] || fail "tasks done: $n1 + $n2"
    [ "$n1" -gt 0 ] && [ "$n2" -gt 0 ] || fail "fair dispatch: $n1 and $n2"
    delete_q "$q"
}

# bound_consumer Q EXCHANGE KEY OUT: a background amqp-consume that declares
# Q (auto-delete), binds it and writes each body as a line to OUT; returns
# once a "ready" sent straight to Q has come through, so the binding exists.
bound_consumer() {
    local q="$1" ex="$2" key="$3" out="$4"
    timeout 40 amqp-consume "${CONN[@]}" -q "$q" -e "$ex" -r "$key" "$SELF" __line >"$out" 2>"$out.err" &
    PIDS+=($!)
    for _ in $(seq 100); do
        publish -r "$q" -b ready   # dropped while q does not exist yet
        for _ in 1 2 3 4 5; do grep -q '^ready$' "$out" && return 0; sleep 0.02; done
    done
    fail "consumer on $q never ready: $(cat "$out.err")"
}

# received Q OUT: the bodies OUT got between the "ready"s and an "end"
# marker sent straight to Q after everything else, comma-separated.
received() {
    publish -r "$1" -b end
    wait_for "$2" '^end$'
    grep -v -e '^ready$' -e '^end$' "$2" | paste -sd, -
}

pubsub() {
    local q1 q2; q1="$(name sub1)"; q2="$(name sub2)"
    # amqp-tools cannot declare exchanges: the built-in amq.fanout stands in.
    # A fanout ignores the key, but amqp-consume 0.11 binds nothing for -r "".
    bound_consumer "$q1" amq.fanout any "$TMP/c1"
    bound_consumer "$q2" amq.fanout any "$TMP/c2"
    publish -e amq.fanout -b "log line"
    [ "$(received "$q1" "$TMP/c1")" = "log line" ] || fail "first copy"
    [ "$(received "$q2" "$TMP/c2")" = "log line" ] || fail "second copy"
}

routing() {
    local qa qb k; qa="$(name errors)"; qb="$(name info)"
    # A per-run key prefix keeps this run apart on the shared amq.direct;
    # one binding per queue, as each amqp-consume makes one.
    k="sev$$"
    bound_consumer "$qa" amq.direct "$k.error" "$TMP/a"
    bound_consumer "$qb" amq.direct "$k.info" "$TMP/b"
    for sev in info warning error; do publish -e amq.direct -r "$k.$sev" -b "$sev"; done
    [ "$(received "$qa" "$TMP/a")" = error ] || fail "error queue got $(cat "$TMP/a")"
    [ "$(received "$qb" "$TMP/b")" = info ] || fail "info queue got $(cat "$TMP/b")"
}

topics() {
    local q1 q2 p; q1="$(name topic1)"; q2="$(name topic2)"
    p="run$$"
    bound_consumer "$q1" amq.topic "$p.*.orange.*" "$TMP/q1"
    bound_consumer "$q2" amq.topic "$p.lazy.#" "$TMP/q2"
    for k in quick.orange.rabbit lazy.orange.elephant quick.orange.fox lazy.brown.fox \
             lazy.pink.rabbit quick.brown.fox orange quick.orange.new.rabbit \
             lazy.orange.new.rabbit lazy; do
        publish -e amq.topic -r "$p.$k" -b "$k"
    done
    local got
    got="$(received "$q1" "$TMP/q1")"
    [ "$got" = "quick.orange.rabbit,lazy.orange.elephant,quick.orange.fox" ] || fail "*.orange.* got $got"
    got="$(received "$q2" "$TMP/q2")"
    [ "$got" = "lazy.orange.elephant,lazy.brown.fox,lazy.pink.rabbit,lazy.orange.new.rabbit,lazy" ] || fail "lazy.# got $got"
}

exclusive_locked() {
    local q; q="$(name exclusive)"
    # The consumer declares q exclusive; until it has, basic.get answers 404.
    timeout 40 amqp-consume "${CONN[@]}" -q "$q" -x -c 1 "$SELF" __line >"$TMP/c" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do
        amqp-get "${CONN[@]}" -q "$q" >/dev/null 2>"$TMP/err"
        grep -q "error 405" "$TMP/err" && break
        sleep 0.05
    done
    grep -q "error 405, message: RESOURCE_LOCKED - " "$TMP/err" || fail "expected 405, got: $(cat "$TMP/err")"
    expect_error 405 "RESOURCE_LOCKED - " amqp-declare-queue "${CONN[@]}" -q "$q"
    publish -r "$q" -b done
    wait "${PIDS[0]}"; PIDS=()
}

passive_404() {
    local q; q="$(name missing)"
    expect_error 404 "NOT_FOUND - no queue '$q' in vhost '/'" amqp-get "${CONN[@]}" -q "$q"
    declare_q -q "$q"
    publish -r "$q" -b "still working"
    [ "$(get_one "$q")" = "still working" ] || fail "after 404"
    delete_q "$q"
}

redeclare_406() {
    local q; q="$(name redeclare)"
    declare_q -q "$q"
    expect_error 406 "PRECONDITION_FAILED - inequivalent arg 'durable' for queue '$q' in vhost '/': received 'true' but current is 'false'" \
        amqp-declare-queue "${CONN[@]}" -d -q "$q"
    delete_q "$q"
}

wrong_password() {
    expect_error 403 "ACCESS_REFUSED - " amqp-get "${CONN[@]}" --password wrong-password -q anything
}

large_message() {
    local q; q="$(name large)"
    declare_q -q "$q"
    head -c $((8 * 1024 * 1024)) /dev/urandom >"$TMP/body"
    publish -r "$q" <"$TMP/body"
    amqp-get "${CONN[@]}" -q "$q" >"$TMP/got" || fail "basic.get"
    [ "$(sha256sum <"$TMP/got")" = "$(sha256sum <"$TMP/body")" ] || fail "body differs ($(stat -c %s "$TMP/got") bytes)"
    delete_q "$q"
}

heartbeat() {
    local q; q="$(name heartbeat)"
    declare_q -q "$q"
    start_consumer "$q" "$TMP/c" 2 --heartbeat=2
    # Idle: librabbitmq sends heartbeats while amqp-consume waits.
    sleep 10
    kill -0 "${PIDS[0]}" 2>/dev/null || fail "consumer gone while idle: $(cat "$TMP/c.err")"
    publish -r "$q" -b alive
    wait "${PIDS[0]}" || fail "consumer exited with $?: $(cat "$TMP/c.err")"
    PIDS=()
    grep -q '^alive$' "$TMP/c" || fail "no message after idle"
    delete_q "$q"
}

close_clean() {
    # Each amqp-publish connects, publishes and closes: the "hello world"
    # sender, 50 times. A failed close makes it exit non-zero.
    local q; q="$(name close)"
    declare_q -q "$q"
    for i in $(seq 0 49); do
        amqp-publish "${CONN[@]}" -r "$q" -b "Hello World!" || fail "iteration $i: amqp-publish exited with $?"
    done
    for i in $(seq 0 49); do get_one "$q" >/dev/null; done
    delete_q "$q"
}

rpc() { na "amqp-consume does not pass reply-to/correlation-id to its command, and an exclusive reply queue lives only as long as one tool's connection"; }
confirms_individual() { na "amqp-publish has no publisher-confirm mode"; }
confirms_batch() { na "amqp-publish has no publisher-confirm mode"; }
confirms_async() { na "amqp-publish has no publisher-confirm mode"; }
mandatory_return() { na "amqp-publish cannot set the mandatory flag"; }
nack_requeue() { na "the tools cannot nack"; }
prefetch_limit() { na "amqp-consume acks each message before taking the next; the unacked count cannot be observed"; }
many_channels() { na "each tool opens a single channel"; }
close_after_burst() { na "amqp-publish sends one message per connection"; }
cc_bcc() { na "amqp-publish --header sets string values only; CC and BCC are arrays"; }
channel_close_race() { na "each tool opens a single channel"; }
server_cancel() { na "librabbitmq does not advertise consumer_cancel_notify, so a broker (RabbitMQ too) sends it no basic.cancel"; }

case "${1:-}" in
    __line) cat; echo ;;   # amqp-consume's per-message command
    hello|work_queues|pubsub|routing|topics|rpc|confirms_individual|confirms_batch|confirms_async|\
    mandatory_return|nack_requeue|prefetch_limit|exclusive_locked|passive_404|redeclare_406|\
    wrong_password|large_message|many_channels|heartbeat|server_cancel|close_clean|close_after_burst|\
    cc_bcc|channel_close_race) "$1" ;;
    *) echo "n/a: no such scenario for this client"; exit 3 ;;
esac
