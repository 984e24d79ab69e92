"""How far a model's lip aperture follows its own training targets, against how far those targets follow the metric.

    .venv/bin/python bench/lip_fidelity.py DATA [--model M]

On a clip set (`corpus align` output), with the model run as `talkmotion eval` runs it, prints
the Pearson correlation of lip aperture (jawOpen - mouthClose, floored at 0), pooled over every
valid frame:
  rules -> openness   the clips' rule labels against the phone-openness curve (their ceiling)
  model -> rules      the model against those labels (its fidelity to what it was taught)
  model -> openness   the model against the curve (`eval`'s openness_corr)
then the same with the rule labels smoothed (a model that blurs time would gain), with the
model a frame early or late (one that lags would gain) and with each clip normalised (one
that misses each speaker's level would gain), and each phone's mean aperture, model and rules.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
from scipy.ndimage import gaussian_filter1d

from talkmotion import labels, metrics
from talkmotion.eval import load_clips, model_source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data")
    parser.add_argument("--model", default="default")
    args = parser.parse_args()
    predict, name, _ = model_source(args.model)
    model, rules, openness, fps, by_phone = [], [], [], [], defaultdict(lambda: ([], []))
    for clip in load_clips(args.data):
        pred = predict(clip)
        valid = clip.mask[:, labels.index("jawOpen")]
        ap, ref = metrics.aperture(pred), metrics.aperture(clip.labels)
        model.append(ap[valid])
        rules.append(ref[valid])
        openness.append(metrics.openness_curve(clip.phonemes, len(pred), clip.fps)[valid])
        fps.append(clip.fps)
        for p in clip.phonemes:
            idx = metrics.core_frames(p.start, p.end, len(pred), clip.fps)
            idx = idx[valid[idx]]
            if idx.size:
                by_phone[p.phone][0].append(ap[idx].mean())
                by_phone[p.phone][1].append(ref[idx].mean())

    def corr(a, b):
        return metrics.pearson(np.concatenate(a), np.concatenate(b))

    def z(x):
        return (x - x.mean()) / (x.std() + 1e-9)

    print(f"{args.data}, model {name}")
    print(f"rules -> openness {corr(rules, openness):.3f}   model -> rules {corr(model, rules):.3f}   "
          f"model -> openness {corr(model, openness):.3f}")
    print("model -> rules smoothed by " + ", ".join(
        f"{ms} ms {corr(model, [gaussian_filter1d(r, ms / 1000 * f) for r, f in zip(rules, fps)]):.3f}" for ms in (20, 40, 80)))
    print("model shifted by " + ", ".join(
        f"{k:+d} frame {corr([np.roll(m, k) for m in model], rules):.3f}" for k in (-1, 1)))
    print(f"each clip normalised: model -> rules {corr([z(m) for m in model], [z(r) for r in rules]):.3f}")
    print("phone  segments  openness  model  rules")
    for phone, (m, r) in sorted(by_phone.items(), key=lambda kv: metrics.OPENNESS.get(kv[0], 0.0)):
        print(f"{phone:5s} {len(m):9d} {metrics.OPENNESS.get(phone, 0.0):9.2f} {np.mean(m):6.3f} {np.mean(r):6.3f}")


if __name__ == "__main__":
    main()
