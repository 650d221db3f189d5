"""`stylegen-trt eval` (which reports the shipped and the any-outline judges itself), with one check more: the
any-outline judge asked, for every image, for the same shape at another position ("moved"; it should never
agree). Verdicts go to SIDE as JSON lines {"prompt", "guided", "any_outline", "moved"}. Record of an experiment.
usage: SIDE=OUT.jsonl python eval_both.py [eval args]"""
import json
import os
import sys

from stylegen_trt import cli
from stylegen_trt.demo import classifier

side = open(os.environ["SIDE"], "w", buffering=1)  # line-buffered: cli.main() ends in sys.exit
make_judge = classifier.content_judge


def recording(judge):
    calls = [0]  # evaluate() judges each pair's guided images, then its branch-off images

    def judged(images, prompts):
        verdicts = judge(images, prompts)
        moved = judge(images, [p.replace("left", "X").replace("right", "left").replace("center", "right")
                               .replace("X", "center") for p in prompts])
        calls[0] += 1
        for p, y, z in zip(prompts, verdicts, moved):
            side.write(json.dumps({"prompt": p, "guided": calls[0] % 2 == 1, "any_outline": y, "moved": z}) + "\n")
        return verdicts

    return judged


classifier.content_judge = lambda model=None: make_judge(model) if model is None else recording(make_judge(model))
sys.argv = ["stylegen-trt", "eval", *sys.argv[1:]]
cli.main()
