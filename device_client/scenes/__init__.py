"""Generated scenes: the benchmark's frames and the device's `generated` test stream, drawn by
one renderer (numpy + OpenCV; scikit-image's photos and faces when it is installed).

    scene = render_scene(np.random.default_rng(7), SceneConfig())          # frame + objects
    scene = render_scene(rng, SceneConfig(styles="shifted"))               # held-out styles
    clip = MovingScene(seed=1, config=SceneConfig())                       # frame(t) for streams

What varies is what a real camera varies (see `styles.py` for the families): the background,
how each object is drawn, its scale, occlusion, and the camera (blur, noise, compression,
exposure, white balance). `styles="shifted"` draws only families that `styles="train"` never
draws, so a model trained on one and tested on the other is tested on looks it has not seen.
"""

from device_client.scenes.render import (
    CLASSES,
    MovingScene,
    PlacedObject,
    Scene,
    SceneConfig,
    render_scene,
)

__all__ = ["CLASSES", "MovingScene", "PlacedObject", "Scene", "SceneConfig", "render_scene"]
