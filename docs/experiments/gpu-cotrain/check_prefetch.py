"""The prefetched stream equals the stage's own: images, prompts, styles, contents and texture swatches."""
import torch

if __name__ == "__main__":
    from stylegen_trt.demo import train as demo_train
    own = demo_train.batches(12, 32, start=5, texture_phase="anchored")
    own_swatches = []
    for _ in range(3):
        own_swatches.append((next(own), demo_train._style_images(None, own.last_styles, "texture"), own.last_contents))
    import prefetch  # noqa: E402
    fetched = demo_train.batches(12, 32, start=5, texture_phase="anchored")
    for (images, prompts), swatches, contents in own_swatches:
        got = next(fetched)
        assert torch.equal(got[0], images) and got[1] == prompts and fetched.last_contents == contents
        assert torch.equal(demo_train._style_images(got[0], fetched.last_styles, "texture"), swatches)
    fetched.pool.shutdown()
    print("prefetch: same stream")
