#!/bin/bash
# The cross-host path on one machine: two network namespaces (two "hosts" that share no address),
# joined by a veth pair with private addresses that exist only inside them. mpirun runs in the
# first; Open MPI starts the daemon of the second "host" through its rsh launcher with an agent
# (this script's tiny generated one) that does `ip netns exec NS` instead of ssh. Both ranks then
# talk MPI over TCP across the veth (btl self,tcp: no shared memory), exactly as on two machines
# with a hostfile. Checks: the collectives test (dist_mpi, 2 ranks), a 2-step data-parallel
# `gemmatune train` run, and traffic counted on the veth.
#
# usage: netns_two_hosts.sh MPIEXEC DIST_MPI GEMMATUNE TOKENIZER_JSON CHAT_TEMPLATE
# Exit 77 (ctest "Not Run") where network namespaces cannot be made (not root, no CAP_NET_ADMIN,
# no `ip`), never a pass.
set -u
MPIEXEC=$1 DIST_MPI=$2 GT=$3 TOK=$4 TMPL=$5
skip() { echo "SKIP: $*"; exit 77; }
[ -x "$MPIEXEC" ] || skip "no mpirun ($MPIEXEC)"
command -v ip >/dev/null || skip "no ip(8) (iproute2)"
[ "$(id -u)" = 0 ] || skip "network namespaces need root"

id=$$
NA=gtA$id NB=gtB$id VA=gva$id VB=gvb$id
# Private addresses from a /24 picked per run, so parallel runs do not collide.
net=10.$((200 + id % 50)).$((id / 50 % 250)).
ADDR_A=${net}1 ADDR_B=${net}2
work=$(mktemp -d /tmp/gt_netns.XXXXXX)
cleanup() {
  ip netns del "$NA" 2>/dev/null
  ip netns del "$NB" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$NA" 2>"$work/err" || skip "ip netns add not permitted: $(cat "$work/err")"
ip netns add "$NB" || skip "ip netns add failed"
ip link add "$VA" type veth peer name "$VB" || skip "no veth pairs here"
ip link set "$VA" netns "$NA" && ip link set "$VB" netns "$NB" || exit 1
ip -n "$NA" addr add "$ADDR_A/24" dev "$VA" && ip -n "$NB" addr add "$ADDR_B/24" dev "$VB" || exit 1
for n in "$NA:$VA" "$NB:$VB"; do
  ip -n "${n%%:*}" link set lo up && ip -n "${n%%:*}" link set "${n#*:}" up || exit 1
done

# The launcher agent: called like ssh as `agent [options] HOST COMMAND...`; runs COMMAND in HOST's
# namespace.
cat >"$work/agent" <<EOF
#!/bin/sh
while [ \$# -gt 0 ] && [ "\${1#-}" != "\$1" ]; do shift; done
host=\$1; shift
case "\$host" in
  $ADDR_A) ns=$NA ;;
  $ADDR_B) ns=$NB ;;
  *) echo "agent: unknown host \$host" >&2; exit 1 ;;
esac
exec ip netns exec "\$ns" sh -c "\$*"
EOF
chmod +x "$work/agent"
printf '%s slots=1\n%s slots=1\n' "$ADDR_A" "$ADDR_B" >"$work/hosts"

mpi() {
  timeout -k 5 120 ip netns exec "$NA" "$MPIEXEC" --hostfile "$work/hosts" -np 2 --map-by node \
    --mca plm_rsh_agent "$work/agent" --mca plm_rsh_no_tree_spawn 1 \
    --mca btl self,tcp --mca btl_tcp_if_include "${net}0/24" --mca oob_tcp_if_include "${net}0/24" \
    -x OMP_NUM_THREADS -x GEMMATUNE_PRECISION -x GEMMATUNE_TEST_RANKS "$@"
}
rx_before=$(ip netns exec "$NB" cat "/sys/class/net/$VB/statistics/rx_bytes")

export GEMMATUNE_TEST_RANKS=2
mpi "$DIST_MPI" --gtest_brief=1 >"$work/dist_mpi.log" 2>&1 || { cat "$work/dist_mpi.log"; echo "FAIL: dist_mpi across namespaces"; exit 1; }

# A data-parallel training run across the two "hosts".
"$GT" init-model --preset tiny --out "$work/model" --seed 2 --tokenizer "$TOK" --chat-template "$TMPL" >/dev/null 2>&1 || exit 1
for i in 1 2 3 4; do
  echo "{\"messages\": [{\"role\": \"user\", \"content\": \"Question $i?\"}, {\"role\": \"assistant\", \"content\": \"Answer $i.\"}]}"
done >"$work/data.jsonl"
mpi "$GT" train --model "$work/model" --out "$work/run" --data "$work/data.jsonl" max_len=48 lora_r=2 lora_alpha=4 steps=2 \
  dist_check_every=1 >"$work/train.log" 2>&1 || { cat "$work/train.log"; echo "FAIL: train across namespaces"; exit 1; }
grep -q "rank 0 of 2" "$work/train.log" || { cat "$work/train.log"; echo "FAIL: not a 2-rank run"; exit 1; }
[ -f "$work/run/adapter/adapter_model.safetensors" ] || { echo "FAIL: no adapter written"; exit 1; }

rx_after=$(ip netns exec "$NB" cat "/sys/class/net/$VB/statistics/rx_bytes")
bytes=$((rx_after - rx_before))
echo "veth $VB ($ADDR_B) received $bytes bytes from $ADDR_A"
[ "$bytes" -gt 10000 ] || { echo "FAIL: no MPI traffic crossed the veth"; exit 1; }
echo "PASS: 2 ranks in namespaces $NA ($ADDR_A) and $NB ($ADDR_B), MPI over TCP"
