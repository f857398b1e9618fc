"""`soupbench merge` against mergekit and PEFT, whole processes, on the same experts (issue 15).

A Llama built from a config with random weights (default ~1B: hidden 2048, 16 layers,
intermediate 5632, vocab 32000) is saved once; N random rank-16 LoRA experts on every decoder
linear module are saved as PEFT folders, and (for mergekit, which merges full models) each expert
merged into the base and saved. Each row runs one merge in a fresh subprocess of this script and
reports the process's wall time, from its start to its exit (imports included: a user running
`soupbench merge` or `mergekit-yaml` pays them, and a tool that defers an import into the merge
would otherwise look cheaper than one that imports up front), and its peak RSS (VmHWM) above the
RSS of the same interpreter after its imports, so that every tool pays for loading its inputs and
writing its output, as a user does. The start-up part of each tool's time is printed at the end.

| ours            | PEFT add_weighted_adapter | mergekit       |
| --------------- | ------------------------- | -------------- |
| task_arithmetic | cat (the same math)       | task_arithmetic |
| linear = task_arithmetic with weights 1/N | - | linear      |
| ties            | ties_svd                  | ties (normalize: true) |
| dare_linear     | dare_linear_svd           | dare_linear    |
| dare_ties       | dare_ties_svd             | dare_ties      |
| magnitude_prune | magnitude_prune_svd       | -              |
| svd             | svd                       | -              |
| cat_static      | cat                       | -              |

Usage: python scripts/bench_merge_peers.py [--hidden 2048 --layers 16 --intermediate 5632]
[--experts 2 4] [--threads 1 2] [--methods ...] [--work DIR]
[--peer-timeout S] [--skip peft:ties_svd ...]. Needs the `bench` extra (mergekit).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DENSITY = 0.75
# ours -> (our params, PEFT combination type or None, mergekit method or None)
ROWS = {
    "task_arithmetic": ("task_arithmetic", "cat", "task_arithmetic"),
    "linear": ("task_arithmetic", None, "linear"),
    "ties": ("ties", "ties_svd", "ties"),
    "dare_linear": ("dare_linear", "dare_linear_svd", "dare_linear"),
    "dare_ties": ("dare_ties", "dare_ties_svd", "dare_ties"),
    "magnitude_prune": ("magnitude_prune", "magnitude_prune_svd", None),
    "svd": ("svd", "svd", None),
    "cat_static": ("cat_static", "cat", None),
}


def rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(tool: str, spec: dict) -> None:
    """Run one merge in this process and print {"seconds", "peak_mib", "above_mib"} as JSON."""
    import torch

    torch.set_num_threads(spec["threads"])
    if tool == "soupbench":
        from benchmark.merge_tool import merge_to_folder
    elif tool == "peft":
        from peft import PeftModel
        from transformers import AutoModelForCausalLM
    else:
        import yaml
        from mergekit.config import MergeConfiguration
        from mergekit.merge import MergeOptions, run_merge
    start_rss = rss_mib("VmRSS")
    start = time.perf_counter()
    n = len(spec["adapters"])
    if tool == "soupbench":
        method, weights = spec["method"], spec.get("weights")
        params = {"weights": weights} if weights else {}
        merge_to_folder(spec["base"], spec["adapters"], method, spec["out"], params, threads=spec["threads"])
    elif tool == "peft":
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(spec["base"]), spec["adapters"][0],
                                          adapter_name="e0")
        for i, path in enumerate(spec["adapters"][1:], start=1):
            model.load_adapter(path, adapter_name=f"e{i}")
        kind = spec["method"]
        # svd_full_matrices=False: the reduced SVD gives the same rank-r result as PEFT's default full
        # one, faster; the peer gets its quickest correct setting.
        model.add_weighted_adapter([f"e{i}" for i in range(n)], [1.0] * n, "merged", combination_type=kind,
                                   density=None if kind in ("cat", "svd") else DENSITY, svd_full_matrices=False)
        model.merge_and_unload(adapter_names=["merged"]).save_pretrained(spec["out"])
    else:
        method = spec["method"]
        per_model = {"weight": 1.0} if method != "linear" else {"weight": 1.0 / n}
        if method in ("ties", "dare_ties", "dare_linear"):
            per_model["density"] = DENSITY
        config = {"merge_method": method, "dtype": "float32", "parameters": {"normalize": method == "ties"},
                  "models": [{"model": m, "parameters": per_model} for m in spec["fulls"]]}
        if method != "linear":
            config["base_model"] = spec["base"]
        run_merge(MergeConfiguration.model_validate(yaml.safe_load(yaml.safe_dump(config))), spec["out"],
                  MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True, lazy_unpickle=True,
                               num_threads=spec["threads"]))
    seconds = time.perf_counter() - start
    peak = rss_mib("VmHWM")
    print(json.dumps({"seconds": seconds, "peak_mib": peak, "above_mib": peak - start_rss}))


def evict(folder: Path) -> None:
    """Write back every dirty page, then drop the model files under `folder` from the page cache
    (posix_fadvise DONTNEED), so that each merge reads its inputs from disk and pays for its own
    writes only, not the previous run's; the libraries every tool imports stay cached, as on a
    machine in use."""
    os.sync()
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def run_child(tool: str, spec: dict, timeout: float | None = None) -> dict:
    """One merge in a fresh process, its inputs not in the page cache (`evict`): `seconds` is its whole wall time,
    `merge_s` the part after imports. A merge still running after `timeout` seconds is stopped:
    {"timeout": seconds}. Its output folder is removed afterwards."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(spec["threads"])}
    evict(Path(spec["base"]).parent)
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, __file__, "--child", tool, json.dumps(spec)], env=env,
                              capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - start
    except subprocess.TimeoutExpired:
        return {"timeout": timeout}
    finally:
        subprocess.run(["rm", "-rf", spec["out"]], check=False)
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1][:80]}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {**result, "merge_s": result["seconds"], "seconds": wall}


def build(work: Path, options: argparse.Namespace, max_experts: int) -> dict:
    import copy

    import torch
    from peft import LoraConfig, PeftModel
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=options.hidden, intermediate_size=options.intermediate,
                         num_hidden_layers=options.layers, num_attention_heads=options.hidden // 64,
                         num_key_value_heads=options.hidden // 64, vocab_size=options.vocab, max_position_embeddings=512)
    base = LlamaForCausalLM(config).eval()
    base.save_pretrained(work / "base")
    n_params = sum(p.numel() for p in base.parameters())
    adapters, fulls = [], []
    for i in range(max_experts):
        generator = torch.Generator().manual_seed(i + 1)
        tensors = {}
        for name, module in base.named_modules():
            if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in TARGETS:
                out, inp = module.weight.shape
                tensors[f"base_model.model.{name}.lora_A.weight"] = torch.randn(options.rank, inp, generator=generator) / inp**0.5
                tensors[f"base_model.model.{name}.lora_B.weight"] = torch.randn(out, options.rank, generator=generator) * 0.01
        folder = work / f"expert{i}"
        LoraConfig(r=options.rank, lora_alpha=2 * options.rank, target_modules=TARGETS).save_pretrained(str(folder))
        save_file(tensors, str(folder / "adapter_model.safetensors"))
        adapters.append(str(folder))
        if "mergekit" in options.peers:
            full = PeftModel.from_pretrained(copy.deepcopy(base), str(folder)).merge_and_unload()
            full.save_pretrained(work / f"full{i}")
            fulls.append(str(work / f"full{i}"))
            del full
    return {"base": str(work / "base"), "adapters": adapters, "fulls": fulls, "n_params": n_params}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, metavar=("TOOL", "SPEC"), help=argparse.SUPPRESS)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--intermediate", type=int, default=5632)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--experts", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--methods", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--peers", nargs="*", default=["peft", "mergekit"], choices=["peft", "mergekit"],
                        help="the tools to compare with (none: our times alone, e.g. for --threads 1)")
    parser.add_argument("--skip", nargs="*", default=[], metavar="TOOL:KIND",
                        help="peer merges not to run, e.g. peft:ties_svd (shown as '-')")
    parser.add_argument("--peer-timeout", type=float, default=300.0,
                        help="stop a peer's merge after this many seconds and report the ratio as a bound "
                        "(PEFT's *_svd types take a full SVD of every module: over 10 minutes at 1B)")
    parser.add_argument("--work", help="folder for the model and experts, reused by a later run of the same shape "
                        "(default: a fresh temporary folder)")
    options = parser.parse_args()
    if options.child:
        child(options.child[0], json.loads(options.child[1]))
        return
    work = Path(options.work) if options.work else Path(tempfile.mkdtemp(prefix="soupbench-peers-"))
    shape = {k: getattr(options, k) for k in ("hidden", "layers", "intermediate", "vocab", "rank")}
    saved = work / "world.json"
    world = json.loads(saved.read_text()) if saved.exists() else None
    if (world is None or world["shape"] != shape or len(world["adapters"]) < max(options.experts)
            or ("mergekit" in options.peers and len(world["fulls"]) < max(options.experts))):
        work.mkdir(parents=True, exist_ok=True)
        world = {**build(work, options, max(options.experts)), "shape": shape}
        saved.write_text(json.dumps(world))
    print(f"Llama {world['n_params'] / 1e6:.0f}M parameters (hidden {options.hidden}, {options.layers} layers), rank "
          f"{options.rank} experts on {', '.join(TARGETS)}; work folder {work}", flush=True)
    print("before every merge the model files are dropped from the page cache: inputs are read from disk",
          flush=True)
    header = (f"{'n':>2} {'thr':>3} {'method':<16} {'ours s':>7} {'+MiB':>6} | {'peft':<20} {'s':>7} {'+MiB':>6} | "
              f"{'mergekit':<16} {'s':>7} {'+MiB':>6} | {'ours/faster':>11} {'MiB ours/mk':>11}")
    print(header + "\n" + "-" * len(header), flush=True)
    startup: dict[str, list[float]] = {}
    for n in options.experts:
        for threads in options.threads:
            for row, (ours, peft_kind, mk_method) in ROWS.items():
                if row not in options.methods:
                    continue
                spec = {"base": world["base"], "adapters": world["adapters"][:n], "fulls": world["fulls"][:n],
                        "threads": threads}
                weights = [1.0 / n] * n if row == "linear" else None
                soup = run_child("soupbench", {**spec, "method": ours, "weights": weights, "out": str(work / "o-soup")})
                peers = {}
                if peft_kind and "peft" in options.peers and f"peft:{peft_kind}" not in options.skip:
                    peers["peft"] = run_child("peft", {**spec, "method": peft_kind, "out": str(work / "o-peft")},
                                              options.peer_timeout)
                if mk_method and "mergekit" in options.peers and f"mergekit:{mk_method}" not in options.skip:
                    peers["mergekit"] = run_child("mergekit", {**spec, "method": mk_method, "out": str(work / "o-mk")},
                                                  options.peer_timeout)
                for folder in ("o-soup", "o-peft", "o-mk"):
                    subprocess.run(["rm", "-rf", str(work / folder)])

                def cell(result: dict | None) -> str:
                    if result is None:
                        return f"{'-':>7} {'-':>6}"
                    if "error" in result:
                        return f"{'error':>7} {'':>6}"
                    if "timeout" in result:
                        return f"{'>' + format(result['timeout'], '.0f'):>7} {'':>6}"
                    return f"{result['seconds']:>7.2f} {result['above_mib']:>6.0f}"
                # a peer stopped at the timeout took longer than that: the ratio is then at most this
                times = [p.get("seconds", p.get("timeout")) for p in peers.values() if "error" not in p]
                bound = "<=" if times and min(times) in [p.get("timeout") for p in peers.values()] else ""
                ratio = (f"{bound + format(soup['seconds'] / min(times), '.2f'):>11}" if times and "seconds" in soup
                         else f"{'-':>11}")
                mk = peers.get("mergekit")
                mem = (f"{soup['above_mib'] / max(mk['above_mib'], 1.0):>11.2f}" if mk and "above_mib" in mk
                       and "above_mib" in soup else f"{'-':>11}")
                print(f"{n:>2} {threads:>3} {row:<16} {cell(soup)} | {peft_kind or '-':<20} {cell(peers.get('peft'))} | "
                      f"{mk_method or '-':<16} {cell(mk)} | {ratio} {mem}", flush=True)
                for name, result in {"soupbench": soup, **peers}.items():
                    if "error" in result:
                        print(f"   {name} failed: {result['error']}", flush=True)
                    elif "seconds" in result:
                        startup.setdefault(name, []).append(result["seconds"] - result["merge_s"])
    print("start-up (interpreter and imports, median over rows), included in the times above: " + ", ".join(
        f"{name} {sorted(times)[len(times) // 2]:.2f} s" for name, times in startup.items()), flush=True)


if __name__ == "__main__":
    main()
