"""usage: python summ_all.py EVAL.json ...  -- every seed of each eval JSON: the guided measures and the base's
(branch off) content, pooled, and per seed."""
import json, sys
for f in sys.argv[1:]:
    rows = json.load(open(f))["rows"]
    for label, part in [("all", rows)] + [(f"seed {s}", [r for r in rows if r["seed"] == s])
                                           for s in sorted({r["seed"] for r in rows})]:
        n = len(part); m = lambda k: sum(r[k] for r in part) / n
        small = [r for r in part if "small circle" in r["prompt"]]
        print(f"{f:28s} {label:7s} n={n} family={m('texture_match_guided'):.3f} spectrum={m('spectrum_guided'):.3f} "
              f"colour={m('colour_distance_guided'):.1f} content={m('content_guided'):.3f} (off {m('content_off'):.3f}) "
              f"small circle={sum(r['content_guided'] for r in small) / max(1, len(small)):.2f}")
