"""Compile a Triton kernel of this project for sm_90 without a GPU and report what matters.

    python gpu/triton_offline.py fwd [--dtype bf16] [--bd 128] [--warps 4] [--sass]

Prints registers, spills, shared memory, the TTGIR layouts and a histogram of SASS opcodes, so a
kernel change can be judged (MUFU.EX2 and FFMA per state update, vector widths, local memory)
before any device time is spent. Uses Triton's bundled ptxas/cuobjdump.
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def compile_kernel(fn, types: dict, constexprs: dict, div16: list[str], num_warps: int, num_stages: int = 3,
                   maxnreg: int | None = None):
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        else:
            sig[name] = types[name]
    attrs = {(fn.arg_names.index(a),): [["tt.divisibility", 16]] for a in div16}
    src = ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32),
                          options={"num_warps": num_warps, "num_stages": num_stages,
                                   **({"maxnreg": maxnreg} if maxnreg else {})})


def loops(sass: str):
    """(start, end, opcode histogram) of each loop body: the instructions from a backward branch's
    target to the branch, innermost first (bodies that contain another loop count it too)."""
    lines = []
    for line in sass.splitlines():
        m = re.match(r"\s*/\*([0-9a-f]+)\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]+)\s*([^;]*)", line)
        if m:
            lines.append((int(m.group(1), 16), m.group(3), m.group(4)))
    found = []
    for addr, op, args in lines:
        if op == "BRA":
            t = re.match(r"\s*(0x[0-9a-f]+)", args)
            if t and int(t.group(1), 16) < addr:
                target = int(t.group(1), 16)
                hist = collections.Counter(o for a, o, _ in lines if target <= a <= addr)
                found.append((target, addr, hist))
    return sorted(found, key=lambda f: f[1] - f[0])


def report(k, show_sass=False, show_ttgir=False):
    md = k.metadata
    print(f"shared {md.shared}  warps {md.num_warps}")
    ttgir = k.asm["ttgir"]
    layouts = sorted(set(re.findall(r"^#(?:blocked|linear|slice|shared|mma)\w* = .*$", ttgir, re.M)))
    print("\n".join(layouts))
    print("convert_layout ops:", ttgir.count("ttg.convert_layout"), " local_alloc:", ttgir.count("local_alloc"))
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(k.asm["cubin"])
    tools = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    sass = subprocess.run([os.path.join(tools, "cuobjdump"), "-sass", f.name], capture_output=True, text=True).stdout
    res = subprocess.run([os.path.join(tools, "cuobjdump"), "-res-usage", f.name], capture_output=True, text=True).stdout
    print(" ".join(l.strip() for l in res.splitlines() if "REG" in l))
    ops = collections.Counter()
    for line in sass.splitlines():
        m = re.match(r"\s*/\*[0-9a-f]+\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]+)", line)
        if m:
            ops[m.group(2)] += 1
    print("SASS opcodes:", ", ".join(f"{o} {c}" for o, c in ops.most_common(40)))
    for start, end, hist in loops(sass):
        print(f"loop {start:#x}-{end:#x}: {sum(hist.values())} instructions:",
              ", ".join(f"{o} {c}" for o, c in hist.most_common(14)))
    if show_sass:
        print(sass)
    if show_ttgir:
        print(ttgir)
    return sass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["fwd", "fwd_state", "bwdseq", "bwd2", "conv_fwd", "conv_bwd", "conv2_fwd", "conv2_bwd"])
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--r", type=int, default=1)
    ap.add_argument("--warps", type=int, default=4)
    ap.add_argument("--stages", type=int, default=3)
    ap.add_argument("--maxnreg", type=int, default=None, help="register cap per thread (ptxas)")
    ap.add_argument("--sass", action="store_true")
    ap.add_argument("--ttgir", action="store_true")
    ap.add_argument("--set", nargs="*", default=[], help="extra constexprs NAME=VALUE")
    args = ap.parse_args()
    from caduceus_cli.model.kernels import scan_triton as st

    dt = args.dtype
    extra = {k: int(v) for k, v in (s.split("=") for s in args.set)}
    bdt = extra.pop("BDTYPE", None)
    if args.what.startswith("fwd"):
        fn = st._scan_fwd_kernel
        types = {n: "i32" for n in fn.arg_names}
        for p in ["u_ptr", "d_ptr", "z_ptr", "y_ptr", "B_ptr", "C_ptr"]:
            types[p] = f"*{dt}"
        if bdt:
            types["B_ptr"] = types["C_ptr"] = "*fp32"
        for p in ["A2_ptr", "D_ptr", "bias_ptr", "hend_ptr", "dtsum_ptr", "ckpt_ptr"]:
            types[p] = "*fp32"
        v = 8 if dt in ("bf16", "fp16") else 4
        ce = dict(su_l=1, sd_l=1, sz_l=1, sy_l=1, sB_n=1, sC_n=1, R=args.r, BT=32 * args.warps, VEC_U=v, VEC_D=v, VEC_Z=v, VEC_Y=v,
                  VEC_B=v, EVEN_C=True, CKPT=128,
                  STATE_ONLY=args.what == "fwd_state", CARRY=False, STORE_CKPT=False, HAS_BIAS=True,
                  SOFTPLUS=True, HAS_D=True, HAS_Z=True, FAST=True, PREFETCH_BC=True, PIPELINE=True, REV=False)
        ce.update(extra)
        if bdt:
            ce["VEC_B"] = 4
        div = [n for n in fn.arg_names if n.endswith("_ptr")] + ["L", "chunk_len", "per_group", "channels",
                                                                  "su_b", "su_c", "sd_b", "sd_c", "sz_b", "sz_c",
                                                                  "sy_b", "sy_c", "sB_b", "sB_g", "sB_n", "sB_l", "sC_l",
                                                                  "sC_b", "sC_g", "sC_n"]
        div = [d for d in div if d not in ce]
    elif args.what == "bwdseq":
        from caduceus_cli.model.kernels import scan_triton_bwd as sb

        fn = sb._scan_bwd_seq_kernel
        types = {n: "i32" for n in fn.arg_names}
        for p in ["u_ptr", "d_ptr", "z_ptr", "dout_ptr", "du_ptr", "dd_ptr", "dz_ptr"]:
            types[p] = f"*{dt}"
        for p in ["A2_ptr", "B_ptr", "C_ptr", "D_ptr", "bias_ptr", "ckpt_ptr", "scratch_ptr", "dbc_ptr", "dA_ptr",
                  "dD_ptr", "dbias_ptr"]:
            types[p] = "*fp32"
        ce = dict(su_l=1, sd_l=1, sz_l=1, so_l=1, sdu_l=1, sdd_l=1, sdz_l=1, sB_n=1, sC_n=1, BT=32 * args.warps,
                  CK=64, EVEN_C=True, HAS_BIAS=True, SOFTPLUS=True, HAS_D=True, HAS_Z=True, FAST=True, RS=True)
        ce.update(extra)
        div = [n for n in fn.arg_names if n.endswith("_ptr") or n.startswith("s")] + ["L", "per_group", "channels"]
        div = [d for d in div if d not in ce and d in types]
    elif args.what == "bwd2":
        from caduceus_cli.model.kernels import scan_triton_bwd2 as sb

        fn = sb._scan_bwd2_kernel
        types = {n: "i32" for n in fn.arg_names}
        for p in ["u_ptr", "d_ptr", "z_ptr", "dout_ptr", "du_ptr", "dd_ptr", "dz_ptr"]:
            types[p] = f"*{dt}"
        for p in ["A2_ptr", "B_ptr", "C_ptr", "D_ptr", "bias_ptr", "ckpt_ptr", "scratch_ptr", "dbc_ptr", "dA_ptr",
                  "dD_ptr", "dbias_ptr"]:
            types[p] = "*fp32"
        ce = dict(su_l=1, sd_l=1, sz_l=1, so_l=1, sdu_l=1, sdd_l=1, sdz_l=1, BT=32 * args.warps,
                  CK=32, EVEN_C=True, HAS_BIAS=True, SOFTPLUS=True, HAS_D=True, HAS_Z=True, FAST=True, SHFL=2,
                  KEEP_DECAY=True, RELOAD_B=False, WSUM=True)
        ce.update(extra)
        div = [n for n in fn.arg_names if n.endswith("_ptr") or n.startswith("s")] + ["L", "per_group", "channels"]
        div = [d for d in div if d not in ce and d in types]
    else:
        from caduceus_cli.model.kernels import conv_triton as ct

        fn = {"conv_fwd": ct._conv_fwd_kernel, "conv_bwd": ct._conv_bwd_kernel, "conv2_fwd": ct._conv2_fwd_kernel,
              "conv2_bwd": ct._conv2_bwd_kernel}[args.what]
        types = {n: "i32" for n in fn.arg_names}
        for n in fn.arg_names:
            if n.endswith("_ptr"):
                types[n] = "*fp32" if n in ("w_ptr", "b_ptr", "dw_ptr", "db_ptr") else f"*{dt}"
        ce = dict(sx_l=1, so_l=1, sg_l=1, sdx_l=1, HAS_BIAS=True, SILU=True, BC=16, BLT=256, BT=32 * args.warps,
                  REV=False, FAST=True)
        ce = {k: v for k, v in ce.items() if k in fn.arg_names}
        ce.update(extra)
        div = [n for n in fn.arg_names if n not in ce and (n.endswith("_ptr") or n in ("L", "D", "chunk_len") or
                                                             n.startswith(("sx_", "so_", "sg_", "sdx_")))]
    k = compile_kernel(fn, types, ce, div, args.warps, args.stages, args.maxnreg)
    report(k, args.sass, args.ttgir)


if __name__ == "__main__":
    main()
