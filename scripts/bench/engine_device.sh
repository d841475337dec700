#!/usr/bin/env bash
# engine_device.sh: issues 5, 6 and 7's end-to-end measurements on the GPU machine, run from
# scripts/gpu_ci.sh (GPU_CI_SKIP_STD=1 GPU_CI_EXTRA=scripts/bench/engine_device.sh, carry .deb) with
# its environment and build: the offload engine's GPU spec, the streamed MLP (gradient paths native
# and host, T up to 16384, f32 masters under autocast, budgets, 8 vs 32 layers), whole training steps
# with the host AdamW, PyTorch all-resident in the same run, host AdamW alone beside PyTorch's fused
# CPU AdamW, and the GPT block stack (resident and streamed) beside PyTorch eager.
# ENGINE_PARTS (default "spec mlp step adamw gpt"; also "base" = the first mlp run, "depth" = 8 vs 32
# layers, "t16k" = T=16384 profiled, "stream" = the host's memory bandwidth, "budget" = budgets with
# residency by migration) picks parts.
set -uo pipefail
RTLUA=build-gpu/bin/ramtorch-lua
PY="env -u LD_LIBRARY_PATH python3"
PARTS=${ENGINE_PARTS:-spec mlp step adamw gpt}
has() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }
T0=$(date +%s)
step() { echo "== engine [$(($(date +%s) - T0))s]: $*"; }
mlp() { timeout 150 $RTLUA scripts/bench/streamed_mlp.lua --steps 3 --warmup 2 "$@" 2>&1 |
        grep -E "^T=|RESULT|profile|worker|rror" | sed "s/^/[$*] /"; }
if has mnist; then
  # the main job on the GPU (issue 4), one epoch of the Fashion-MNIST files carried in .data/
  step "Fashion-MNIST main job on cuda, one epoch, beside PyTorch"
  timeout 120 $RTLUA scripts/train_mnist.lua --epochs 1 --data .data --out /tmp/mnist --device cuda 2>&1 |
    tr '\r' '\n' | grep -E "^epoch 1:|^done|rror" | sed "s/^/ramtorch cuda | /"
  timeout 120 $PY scripts/bench/mnist_torch.py .data --device cuda 2>&1 | tail -2
fi
if has specout; then
  step "GPU specs with failure details"
  BUSTED=${BUSTED_BIN:-/tmp/debroot/usr/bin/busted}
  for sp in tests/gpu/*_spec.lua; do
    RAMTORCH_CUDA_POISON=1 timeout 200 $RTLUA "$BUSTED" -o utfTerminal "$sp" > /tmp/spec.log 2>&1
    echo "SPEC $sp rc=$? $(grep -aE '[0-9]+ success' /tmp/spec.log | tail -1)"
    grep -aE "Failure|Error" -A12 /tmp/spec.log | head -${SPEC_FAIL_LINES:-40}
  done
fi
if has attn; then
  # issue 7's attention line: the H200's wgmma kernels (attention_sm90.cu), the portable mma.sync
  # kernels (RAMTORCH_ATTN_SM90=0) and PyTorch's SDPA in the same call, after the transformer spec
  step "cuda_transformer_spec (poisoned allocations), attention benchmarks"
  BUSTED=${BUSTED_BIN:-/tmp/debroot/usr/bin/busted}
  RAMTORCH_CUDA_POISON=1 timeout 200 $RTLUA "$BUSTED" -o utfTerminal tests/gpu/cuda_transformer_spec.lua > /tmp/spec.log 2>&1
  echo "SPEC cuda_transformer rc=$? $(grep -aE '[0-9]+ success' /tmp/spec.log | tail -1)"
  grep -aE "Failure|Error" -A12 /tmp/spec.log | head -${SPEC_FAIL_LINES:-60}
  for r in 1 2; do
    timeout 120 $RTLUA scripts/bench/gpu_attention.lua 2>&1 | sed "s/^/sm90 run $r | /"
  done
  for v in ${ATTN_VARIANTS:-}; do # NAME=VALUE environment settings of the wgmma kernels
    env $v RAMTORCH_CUDA_POISON=1 timeout 200 $RTLUA "$BUSTED" -o utfTerminal tests/gpu/cuda_transformer_spec.lua > /tmp/spec.log 2>&1
    echo "SPEC $v rc=$? $(grep -aE '[0-9]+ success' /tmp/spec.log | tail -1)"
    for r in 1 2; do env $v timeout 120 $RTLUA scripts/bench/gpu_attention.lua 2>&1 | sed "s/^/sm90 $v | /"; done
  done
  RAMTORCH_ATTN_SM90=0 timeout 120 $RTLUA scripts/bench/gpu_attention.lua 2>&1 | sed "s/^/mma.sync | /"
  timeout 120 $PY scripts/bench/gpu_attention.py 2>&1 | sed "s/^/pytorch | /"
fi
if has specall; then
  step "ctest -L gpu (poisoned allocations)"
  (cd build-gpu && RAMTORCH_CUDA_POISON=1 timeout 200 ctest -L gpu --output-on-failure 2>&1 | tail -12)
fi
if has spec; then
  step "offload_cuda_spec + cuda_linear_spec (poisoned allocations)"
  (cd build-gpu && RAMTORCH_CUDA_POISON=1 timeout 200 ctest -R "offload_cuda|cuda_linear" --output-on-failure 2>&1 | tail -6)
fi
if has base; then
  step "streamed MLP, bf16 weights, native gradient path"
  mlp --tokens 1024,4096 --profile
fi
if has budget; then
  # residency by migration: budgets at T=1024 (pool of half the weights; half the weights resident
  # beside the streaming window; all) beside PyTorch all-resident and no budget in the same call
  step "budgets at T=1024: pool of half the weights, half resident + window, all resident"
  mlp --tokens 1024 --profile
  mlp --tokens 1024 --budget-frac 0.5 --profile
  mlp --tokens 1024 --resident-frac 0.5 --profile
  mlp --tokens 1024 --budget-frac 1
  mlp --tokens 4096 --budget-frac 1
  timeout 150 $PY scripts/bench/streamed_mlp_torch.py --tokens 1024,4096 --steps 3 2>&1 | tail -3
fi
if has depth; then
  step "depth: 8 and 32 layers at T=1024 (peak GPU memory), without and with save_on_cpu"
  mlp --tokens 1024 --layers 8 --steps 2
  mlp --tokens 1024 --layers 32 --steps 2
  mlp --tokens 1024 --layers 8 --steps 2 --save-on-cpu
  mlp --tokens 1024 --layers 32 --steps 2 --save-on-cpu
fi
if has t16k; then
  step "T=16384, profiled"
  mlp --tokens 16384 --steps 2 --warmup 1 --profile
fi
if has mlp; then
  step "streamed MLP, bf16 weights, native gradient path"
  mlp --tokens 1024,4096 --profile
  step "same, host gradient path (always-f32 host gradients, the previous default)"
  RAMTORCH_OFFLOAD_GRAD_PATH=host mlp --tokens 1024
  step "T=16384"
  mlp --tokens 16384 --steps 2 --warmup 1
  step "f32 masters under bf16 autocast, T=4096"
  mlp --tokens 4096 --dtype f32 --autocast
  step "budgets at T=1024: a pool of half the weights, half the weights resident, all"
  mlp --tokens 1024 --budget-frac 0.5
  mlp --tokens 1024 --resident-frac 0.5
  mlp --tokens 1024 --budget-frac 1
  step "depth: 8 and 32 layers at T=1024 (peak GPU memory), with save_on_cpu"
  mlp --tokens 1024 --layers 8 --steps 2 --save-on-cpu
  mlp --tokens 1024 --layers 32 --steps 2 --save-on-cpu
  step "PyTorch, every weight resident"
  timeout 150 $PY scripts/bench/streamed_mlp_torch.py --tokens 1024,4096,16384 --steps 3 2>&1 | tail -4
fi
if has step; then
  step "whole training step, T=4096: f32 masters + bf16 autocast + AdamW f32 states"
  mlp --tokens 4096 --dtype f32 --autocast --optim adamw --overlap
  mlp --tokens 4096 --dtype f32 --autocast --optim adamw --delay
  [ -n "${ENGINE_NO_OVERLAP:-}" ] && mlp --tokens 4096 --dtype f32 --autocast --optim adamw
  step "whole training step, T=4096: bf16 weights + AdamW bf16 states"
  mlp --tokens 4096 --optim adamw --state-dtype bf16 --overlap
  mlp --tokens 4096 --optim adamw --state-dtype bf16 --delay
  [ -n "${ENGINE_NO_OVERLAP:-}" ] && mlp --tokens 4096 --optim adamw --state-dtype bf16
fi
if has adamw; then
  step "host AdamW alone, 2^27 parameters"
  timeout 150 $RTLUA scripts/bench/host_adamw.lua 27 2>&1 | tail -6
  timeout 150 $PY scripts/bench/host_adamw.py 27 2>&1 | tail -3
fi
if has stream; then
  # the host's own memory bandwidth, to read the host AdamW figures against (issue 6)
  step "host memory bandwidth (STREAM-style, 2^27 f32 per array)"
  cmake --build build-gpu --target bench_host_stream > /dev/null 2>&1 || echo "bench_host_stream: build failed"
  for th in 16 8; do
    OMP_NUM_THREADS=$th OMP_PROC_BIND=spread timeout 100 build-gpu/bin/bench_host_stream 27 8 2>&1 | sed "s/^/[threads $th] /"
  done
fi
if has adamwvar; then
  step "host AdamW code paths and threads (bf16 parameters, gradients and states)"
  for v in "16 10 3" "16 10 2" "8 10 3"; do
    timeout 100 $RTLUA scripts/bench/host_adamw.lua 27 $v 2>&1 | grep -E "RESULT|path" | sed "s/^/[threads,iters,path $v] /"
  done
fi
if has gpt; then
  step "GPT block stack (12 x 1024, T=1024, batch 16)"
  gpt() { timeout 150 $RTLUA scripts/bench/gpt_stack.lua $1 --steps 4 2>&1 | tail -8 | sed "s/^/[gpt $1] /"; }
  gpt "--autocast --breakdown"
  [ -z "${GPT_SHORT:-}" ] && gpt ""
  timeout 200 $PY scripts/bench/gpt_stack.py --steps 4 2>&1 | tail -6
  gpt "--streamed --autocast --breakdown"
fi
if has membench; then
  step "elementwise/reduction bandwidth (gpu_memory) beside PyTorch"
  timeout 120 $RTLUA scripts/bench/gpu_memory.lua 2>&1 | grep RESULT | sed 's/^/[rt] /'
  timeout 120 $PY scripts/bench/gpu_memory.py 2>&1 | grep RESULT | sed 's/^/[pt] /'
fi
if has gptprof; then
  # kernel time per kernel name for one GPT training run, ours and PyTorch's (needs nsys)
  step "GPT stack kernel profile (nsys)"
  NSYS=$(command -v nsys || ls /usr/local/cuda*/bin/nsys /opt/nvidia/nsight-systems*/bin/nsys 2>/dev/null | head -1)
  if [ -z "$NSYS" ]; then echo "no nsys here"; ls -d /usr/local/cuda*/ /opt/nvidia/* 2>/dev/null; else
    prof() { local name=$1; shift
      timeout 200 $NSYS profile -t cuda -o /tmp/prof_$name -f true "$@" > /dev/null 2>&1
      timeout 100 $NSYS stats -q -r cuda_gpu_kern_sum -f csv /tmp/prof_$name.nsys-rep 2>/dev/null |
        python3 -c "
import csv,sys
rows=list(csv.DictReader(sys.stdin))
tot=sum(float(r['Total Time (ns)']) for r in rows)
print('$name total kernel ms', round(tot/1e6,1))
for r in rows[:${PROF_TOP:-28}]:
    print('$name %7.1f ms %6s x  %s' % (float(r['Total Time (ns)'])/1e6, r['Instances'], r['Name'][:110]))
"; }
    prof rt $RTLUA scripts/bench/gpt_stack.lua --autocast --steps 3 --warmup 1
    prof pt env -u LD_LIBRARY_PATH python3 scripts/bench/gpt_stack.py --steps 3 --warmup 1 --modes autocast
  fi
fi
if has nodeprof; then
  step "GPT stack backward per node (RAMTORCH_AUTOGRAD_PROFILE, device synchronized per node)"
  RAMTORCH_AUTOGRAD_PROFILE=1 timeout 120 $RTLUA scripts/bench/gpt_stack.lua --autocast --steps 1 --warmup 1 2>&1 |
    awk '/autograd profile/ {n++} n == 2' | head -40
fi
# kprof NAME STEPS CMD...: kernel time per kernel name (Nsight Compute, one metric, kernels
# serialized), divided by STEPS
NCU=$(command -v ncu || find /opt/nvidia/nsight-compute /usr/local/cuda*/ -name ncu -type f 2>/dev/null | head -1)
kprof() { local name=$1 steps=$2; shift 2
  timeout ${NCU_TIMEOUT:-240} $NCU --metrics gpu__time_duration.sum --csv --print-units base "$@" > /tmp/ncu_$name.csv 2> /tmp/ncu_$name.err
  echo "$name rc=$? $(wc -l < /tmp/ncu_$name.csv) lines"; grep -m3 -i "error\|ERR_" /tmp/ncu_$name.err /tmp/ncu_$name.csv
  python3 - /tmp/ncu_$name.csv $name $steps <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
if not rows: sys.exit()
h = rows[0]; ki = h.index("Kernel Name"); vi = h.index("Metric Value")
agg = collections.defaultdict(lambda: [0.0, 0])
for r in rows[1:]:
  try: v = float(r[vi].replace(",", ""))
  except ValueError: continue
  k = r[ki][:100]; agg[k][0] += v; agg[k][1] += 1
st = float(sys.argv[3])
tot = sum(a[0] for a in agg.values()) / st
print("%s: %d kernels per step, %.2f ms kernel time per step" % (sys.argv[2], sum(a[1] for a in agg.values()) / st, tot / 1e6))
for k, (t, n) in sorted(agg.items(), key=lambda x: -x[1][0])[:40]:
  print("%s %8.3f ms/step %5.0f x %s" % (sys.argv[2], t / st / 1e6, n / st, k))
PY
}
if has attnncu; then
  # the attention benchmark kernel by kernel (Nsight Compute; 26 forward launches, 13 backward)
  step "attention kernels (ncu)"
  kprof attn 1 $RTLUA scripts/bench/gpu_attention.lua
fi
if has attnprof; then
  # one launch of each wgmma attention kernel in detail: tensor-pipe use, stall reasons, issue
  step "attention kernels, Nsight Compute sections"
  for k in k_s9_fwd k_s9_dq k_s9_dkdv; do
    timeout 200 $NCU --section SpeedOfLight --section WarpStateStats --section SchedulerStats \
      --section Occupancy --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
      -k regex:$k -c 1 $RTLUA scripts/bench/gpu_attention.lua > /tmp/prof_$k.txt 2>&1
    echo "PROF $k rc=$?"
    grep -aE "Duration|Throughput|Pipe|Issue|Stall|stall|Warp Cycles|Eligible|Active Warps|Occupancy|Registers|Shared Memory|Bank|L2 Hit|Mem Busy|Max Bandwidth|Executed Ipc|One or More|No Eligible" /tmp/prof_$k.txt | grep -v "^==PROF==" | head -60
  done
fi
if has ncu; then
  # kernel time per kernel name (Nsight Compute, one metric, kernels serialized) for a 2-layer GPT
  # (the same shapes per layer as the benchmark's 12), ours and PyTorch's, two steps each
  step "GPT stack kernels (ncu, ${NCU_LAYERS:-2} layers, per step)"
  kprof rt 2 $RTLUA scripts/bench/gpt_stack.lua --autocast --n-layer ${NCU_LAYERS:-2} --steps 1 --warmup 1
  kprof pt 3 env -u LD_LIBRARY_PATH python3 scripts/bench/gpt_stack.py --n-layer ${NCU_LAYERS:-2} --steps 1 --warmup 1 --modes autocast
fi
if has mlpncu; then
  # the streamed MLP at T=16384 beside PyTorch all-resident, kernel by kernel (1 warm-up + 1 timed
  # iteration of forward and of forward+backward each; totals, not per step)
  step "streamed MLP T=16384 kernels (ncu)"
  kprof rt 1 $RTLUA scripts/bench/streamed_mlp.lua --tokens 16384 --steps 1 --warmup 1
  kprof pt 1 env -u LD_LIBRARY_PATH python3 scripts/bench/streamed_mlp_torch.py --tokens 16384 --steps 1 --warmup 1
fi
step "done"
