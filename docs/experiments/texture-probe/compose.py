import json, sys
from PIL import Image, ImageDraw
panels = [("/work/probe-narrow", "32 ch at 16x16, linear"), ("/work/probe-wide", "64 ch at 16x16, linear"),
          ("/work/probe-cos", "32 ch, cosine"), ("/work/probe-wide-cos", "64 ch, cosine")]
size = 256; out = Image.new("RGB", (size * len(panels) + 8 * (len(panels) - 1), size + 36), "white")
d = ImageDraw.Draw(out)
for i, (path, label) in enumerate(panels):
    try:
        im = Image.open(path + "/samples.png").resize((size, size), Image.NEAREST)
        r = json.load(open(path + "/result.json"))["judge_hist"]
    except FileNotFoundError:
        continue
    x = i * (size + 8); out.paste(im, (x, 36))
    d.text((x + 2, 2), label, fill="black")
    d.text((x + 2, 18), f"judge: stripes {r['stripes']}, waves {r['waves']} of 16", fill="black")
out.save(sys.argv[1])
