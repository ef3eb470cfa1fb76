# The PyTorch step hdssl is timed against (bench_model), the same FPN and loss; kept as written for the
# comparison, run by scripts/gpu_check.sh in the same call as bench_model.
"""PyTorch baseline for one pre-training step of the method (the FPN of spec_fpn.py beside this file,
the same function as the published model): 2 x B patches forward+backward, positive-pair gather from
every level, balanced projection (hdssl) or raw concatenation (vox2vec), MLP, symmetric InfoNCE,
reconstruction MSE (hdssl), grad clip, Adam. Prints one JSON line per configuration.
Usage: python3 torch_step_bench.py [--device cuda] [--patch 128x128x32] [--pairs 10] [--steps 12]
       [--configs hdssl,vox2vec] [--modes default,bf16cl]
"default" is what the reference runs (fp32 weights, TF32 convs, NCDHW); "bf16cl" is bf16 autocast +
channels-last-3d, the tuned PyTorch to beat. On the GPU machine run it with that machine's python3
(PyTorch 2.x with CUDA); on a CPU machine Debian's python3-torch runs it with --device cpu."""
import argparse, json, os, sys, time
import torch, torch.nn as nn, torch.nn.functional as F
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from spec_fpn import SpecFPN


def info_nce(z1, z2, tau=0.1):
    n = z1.shape[0]; eye = torch.eye(n, dtype=torch.bool, device=z1.device)
    s11 = (z1 @ z1.T / tau).masked_fill(eye, float('-inf')); s12 = z1 @ z2.T / tau
    s22 = (z2 @ z2.T / tau).masked_fill(eye, float('-inf'))
    l1 = (-s12.diag() + torch.logsumexp(torch.cat([s11, s12], 1), 1)).mean()
    l2 = (-s12.diag() + torch.logsumexp(torch.cat([s12.T, s22], 1), 1)).mean()
    return (l1 + l2) / 2


class Pretrainer(nn.Module):
    def __init__(self, base, levels, balanced):
        super().__init__()
        self.fpn = SpecFPN(base, levels); self.balanced = balanced
        ch = [base * 2 ** i for i in range(levels)]
        self.proj = nn.ModuleList([nn.Linear(c, 32, bias=(i == 0)) for i, c in enumerate(ch)]) if balanced else None
        d = 32 * levels if balanced else sum(ch)
        self.head = nn.Sequential(nn.Linear(d, d), nn.BatchNorm1d(d), nn.ReLU(), nn.Linear(d, d), nn.BatchNorm1d(d),
                                  nn.ReLU(), nn.Linear(d, 128))
        self.rec = nn.Conv3d(base, 1, 1) if balanced else None

    def view(self, x, b, xyz):
        pyr = self.fpn(x); feats = []
        for i, p in enumerate(pyr):   # batched gather per level at floor(v / 2^i)
            f = p.permute(0, 2, 3, 4, 1)[b, xyz[:, 0] >> i, xyz[:, 1] >> i, xyz[:, 2] >> i]
            feats.append(self.proj[i](f) if self.balanced else f)
        z = F.normalize(self.head(torch.cat(feats, 1)), dim=1)
        return z, (self.rec(pyr[0]) if self.balanced else None)


def run(cfg, base, levels, balanced, amp, cl, a):
    dev = a.device; torch.manual_seed(0)
    m = Pretrainer(base, levels, balanced).to(dev)
    if cl: m = m.to(memory_format=torch.channels_last_3d)
    opt = torch.optim.Adam(m.parameters(), 3e-4)
    P = tuple(int(s) for s in a.patch.split('x')); B = a.pairs
    x1, x2 = torch.rand(B, 1, *P, device=dev), torch.rand(B, 1, *P, device=dev)
    t1, t2 = torch.rand_like(x1), torch.rand_like(x2)
    if cl: x1, x2 = x1.contiguous(memory_format=torch.channels_last_3d), x2.contiguous(memory_format=torch.channels_last_3d)
    n = 1024 * B
    b = torch.arange(B, device=dev).repeat_interleave(1024)
    xyz = torch.stack([torch.randint(0, s, (n,), device=dev) for s in P], 1)
    sync = torch.cuda.synchronize if dev == 'cuda' else (lambda: None)
    if dev == 'cuda': torch.cuda.reset_peak_memory_stats()
    ts = []
    for i in range(a.steps + a.warmup):
        sync(); t0 = time.perf_counter()
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=amp):
            z1, r1 = m.view(x1, b, xyz); z2, r2 = m.view(x2, b, xyz)
            loss = info_nce(z1.float(), z2.float())
            if balanced: loss = loss + 10 * (F.mse_loss(r1.float(), t1) + F.mse_loss(r2.float(), t2)) / 2
        opt.zero_grad(set_to_none=True); loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0); opt.step()
        sync(); ts.append(time.perf_counter() - t0)
    ts = sorted(ts[a.warmup:])
    r = dict(cfg=cfg, device=dev, amp_bf16=amp, channels_last_3d=cl, patch=a.patch, pairs=B,
             median_ms=round(1000 * ts[len(ts) // 2], 1), min_ms=round(1000 * ts[0], 1),
             peak_gib=round(torch.cuda.max_memory_allocated() / 2 ** 30, 1) if dev == 'cuda' else None,
             card=torch.cuda.get_device_name() if dev == 'cuda' else 'cpu', torch=torch.__version__)
    print(json.dumps(r), flush=True)


if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--device', default='cuda'); p.add_argument('--patch', default='128x128x32')
    p.add_argument('--pairs', type=int, default=10); p.add_argument('--steps', type=int, default=12)
    p.add_argument('--warmup', type=int, default=4); p.add_argument('--configs', default='hdssl,vox2vec')
    p.add_argument('--modes', default='default,bf16cl')
    a = p.parse_args()
    if a.device == 'cuda': torch.backends.cudnn.benchmark = True
    for c in a.configs.split(','):
        base, levels, bal = (32, 5, True) if c == 'hdssl' else (16, 6, False)
        for mode in a.modes.split(','):
            run(c, base, levels, bal, mode == 'bf16cl', mode == 'bf16cl', a)
