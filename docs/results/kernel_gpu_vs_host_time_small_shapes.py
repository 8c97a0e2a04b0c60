"""GPU time (profiler, kernels only) and eager host-bound time per SDPA backend at small shapes."""
import statistics, time, torch, torch.nn.functional as F, mha
from torch.profiler import profile, ProfilerActivity
from mha import functional as fn
torch.manual_seed(0)
dev = "cuda"
FLAG = fn._SDPA_FLAGS
def only(name):
    for b, (_, en) in FLAG.items(): en(b == name)
def allon():
    for b, (_, en) in FLAG.items(): en(True)
def gpu_us(step, iters=50):
    for _ in range(5): step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters): step()
        torch.cuda.synchronize()
    tot = sum(e.self_device_time_total for e in prof.key_averages())
    return tot / iters
def host_us(step, reps=200, samples=15):
    for _ in range(5): step()
    torch.cuda.synchronize()
    ts = []
    for _ in range(samples):
        s, e = torch.cuda.Event(True), torch.cuda.Event(True)
        s.record()
        for _ in range(reps): step()
        e.record(); torch.cuda.synchronize()
        ts.append(s.elapsed_time(e) * 1e3 / reps)
    return statistics.median(ts)
shapes = [(16,12,197,64),(8,12,197,64),(32,12,197,64),(16,6,197,64),(64,4,64,64),(16,12,256,64),(16,4,64,64)]
for shape in shapes:
    q, k, v = (torch.randn(*shape, device=dev, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    g = torch.randn_like(q)
    for bwd in (False, True):
        res = {}
        for name in ("default", "flash", "efficient", "cudnn"):
            if name == "default": allon()
            else: only(name)
            try:
                if bwd:
                    step = lambda: F.scaled_dot_product_attention(q, k, v).backward(g)
                    gt = gpu_us(step); ht = host_us(step)
                else:
                    with torch.no_grad():
                        step = lambda: F.scaled_dot_product_attention(q, k, v)
                        gt = gpu_us(step); ht = host_us(step)
                res[name] = (round(gt, 1), round(ht, 1))
            except Exception as e:
                res[name] = str(e)[:40]
        allon()
        mha.clear_backend_cache()
        if bwd:
            step = lambda: mha.attention(q, k, v).backward(g)
            ho = host_us(step)
        else:
            with torch.no_grad():
                step = lambda: mha.attention(q, k, v)
                ho = host_us(step)
                go = gpu_us(step)
        if bwd:
            go = gpu_us(step)
        res["ours"] = (round(go, 1), round(ho, 1), mha.last_backend())
        print(shape, "fwdbwd" if bwd else "fwd", "(gpu_us, host_us):", res, flush=True)
