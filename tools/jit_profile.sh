#!/usr/bin/env bash
# Where the time of a running nst process goes inside the machine code that lavapipe (llvmpipe)
# compiled from nst's shaders: samples it with perf, dumps the hottest block of JIT code from the
# live process with gdb, disassembles it with objdump and prints the instruction mix weighted by the
# samples. lavapipe's JIT code has no symbols, so this is the only way to see what a WGSL change
# does to the generated code (spills, per-lane loops of buffer loads and stores, texel fetches,
# whether fma stays fused).
#
#   tools/jit_profile.sh PID [SECONDS] [OUTDIR]
#
# PID: a process that runs one kernel over and over (an `nst bench` run, or a small example that
# replays one dispatch); SECONDS of sampling (default 3); OUTDIR for perf.data, jit.bin, jit.asm and
# annotated.txt (default /tmp/nst-jit-profile). Needs perf, gdb, objdump and python3, and
# permission to attach to the process (root, or kernel.yama.ptrace_scope=0). The process keeps
# running; the code of the hottest contiguous pages (the kernel being replayed) is what is dumped.
#
# annotated.txt holds one line per instruction: address, samples, mnemonic, operands. The samples
# of an instruction that waits usually land on the one after it (skid), so read regions, not lines.
set -euo pipefail
pid=${1:?usage: tools/jit_profile.sh PID [SECONDS] [OUTDIR]}
seconds=${2:-3}
out=${3:-/tmp/nst-jit-profile}
for tool in perf gdb objdump python3; do
  command -v "$tool" >/dev/null || { echo "jit_profile: $tool not found (apt-get install linux-perf gdb binutils)" >&2; exit 2; }
done
[[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || { echo "jit_profile: no process '$pid'" >&2; exit 2; }
mkdir -p "$out"
perf record -q -F 4000 -p "$pid" -o "$out/perf.data" -- sleep "$seconds" >/dev/null 2>&1
perf script -i "$out/perf.data" -F ip 2>/dev/null | awk 'NF { print $1 }' >"$out/ips.txt"
# The hottest 4 KiB page, widened to its neighbours while they hold samples: one kernel's code.
read -r lo hi < <(python3 - "$out/ips.txt" <<'PY'
import collections, sys
pages = collections.Counter(int(l, 16) >> 12 for l in open(sys.argv[1]) if l.strip())
top = max(pages, key=pages.get)
lo = hi = top
while pages.get(lo - 1, 0) > 10: lo -= 1
while pages.get(hi + 1, 0) > 10: hi += 1
print(lo << 12, (hi + 1) << 12)
PY
)
gdb -p "$pid" -batch -ex "dump binary memory $out/jit.bin $lo $hi" >/dev/null 2>&1
[ -s "$out/jit.bin" ] || { echo "jit_profile: gdb could not read the code at $lo..$hi of $pid" >&2; exit 1; }
objdump -D -b binary -mi386:x86-64 --adjust-vma="$lo" "$out/jit.bin" >"$out/jit.asm"
python3 - "$out" <<'PY'
import collections, re, sys
out = sys.argv[1]
samples = collections.Counter(int(l, 16) for l in open(f"{out}/ips.txt") if l.strip())
total = sum(samples.values())
rows, mix, static = [], collections.Counter(), collections.Counter()
for line in open(f"{out}/jit.asm"):
    m = re.match(r"\s*([0-9a-f]+):\s+(?:[0-9a-f]{2} )+\s*(\S+)\s*(.*)", line)
    if not m:
        continue
    address, mnemonic, operands = int(m.group(1), 16), m.group(2), m.group(3).strip()
    if mnemonic.startswith("(bad)"):
        continue
    n = samples.get(address, 0)
    kind = mnemonic
    if "(%rsp" in operands:  # the stack: spills and lavapipe's per-lane extracts
        kind += " [stack store]" if operands.endswith(")") and mnemonic.startswith(("vmov", "mov")) else " [stack load]"
    mix[kind] += n
    static[kind] += 1
    rows.append(f"{address:x} {n:6d} {mnemonic} {operands}")
open(f"{out}/annotated.txt", "w").write("\n".join(rows) + "\n")
inside = sum(mix.values())
print(f"{total} samples, {inside} ({100 * inside / max(total, 1):.0f}%) in the dumped code, {len(rows)} instructions")
print(f"{'instruction':32s} {'samples':>8s} {'share':>6s} {'static':>7s}")
for kind, n in mix.most_common(20):
    print(f"{kind:32s} {n:8d} {100 * n / max(total, 1):5.1f}% {static[kind]:7d}")
fused = sum(v for k, v in static.items() if k.startswith("vfmadd"))
print(f"fused multiply-adds in the code: {fused}; multiplies: {sum(v for k, v in static.items() if k.startswith('vmulps'))}")
print(f"annotated code: {out}/annotated.txt")
PY
