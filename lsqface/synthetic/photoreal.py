"""Synthetic photographs of whole heads with the fitted face's true maps.

A face is drawn from the morphable model (identity, expression, albedo), but
what is rendered is everything a photo shows: the whole ICT head (scalp, ears,
neck, eyes, mouth interior, teeth, eyelashes) painted with a skin tone, lips,
eyebrows, stubble, make-up and scalp hair (:mod:`lsqface.synthetic.materials`),
shoulders in clothing, long hair, glasses, hands, objects, masks and hats
(:mod:`lsqface.synthetic.accessories`), lit by coloured spherical-harmonic light
plus a directional light from behind the head (a rim light, with specular highlights
on the silhouette) or, in a share of images, a sun from the camera's side that casts
shadows (:mod:`lsqface.synthetic.shadows`), over a background photo,
then degraded by a random camera (:mod:`lsqface.synthetic.camera`). Images are
rendered at ``supersample`` times the size and averaged down, as a camera
integrates over its pixels.

The true maps cover only the fitted face region where it is visible: a pixel
whose nearest surface is hair, an ear, the neck, glasses or a hand is not face
(correspondence, depth and confidence 0), so the network learns where the
fitted face ends in a real photo.

Conventions as :mod:`lsqface.data.synthetic` (camera frame, pixel centres at
``j + 0.5``, depth = camera z in mm). Each face is a deterministic function of
its seed and of the background and texture it is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from lsqface.lighting.sh import constant_lighting, sh_shading
from lsqface.morphable.ict import ICT_LANDMARKS_68
from lsqface.morphable.model import basis_products
from lsqface.morphable.uv_model import UVMorphableModel
from lsqface.render.interpolate import interpolate, vertex_normals
from lsqface.render.rasterize import rasterize
from lsqface.synthetic.accessories import accessory_layout, place_accessories
from lsqface.synthetic.camera import EffectRates, camera_effects, sample_camera, uniform
from lsqface.synthetic.head import EYEBALL, FITTED_VERTEX_COUNT, TEETH, HeadModel
from lsqface.synthetic.materials import head_regions, paint_head
from lsqface.synthetic.shadows import light_visibility

# Offsets the seed of the shadows' own generator (PhotoConfig.shadows) from the face's.
SHADOW_SEED_OFFSET = 7_000_003


@dataclass(frozen=True)
class PhotoConfig:
    """How synthetic photographs are drawn. Angles in degrees, lengths in millimetres.

    Attributes:
        size: output image side in pixels; supersample: rendering resolution factor.
        identity_std, expression_std, albedo_std: coefficient spread in the model's standard deviations.
        roll_range, yaw_range, pitch_range: pose ranges.
        face_fraction: range of the fitted face's width as a fraction of the image width.
        shift: range of the face centre's offset from the image centre, fraction of the size.
        field_of_view: horizontal field of view range.
        lighting_std: spread of the SH coefficients around constant lighting; ambient: range of its level.
        directional: range of the strength of a directional light from behind the head (a rim light: it
            lights the silhouette and the sides of the face, with specular highlights there).
        realism: scales the probability of hair, brows, lips, beards and make-up (0: bare skin).
        occluders: scales the probability of glasses, hands, objects, masks and hats (0: none).
        long_hair: probability of hair falling to the shoulders.
        effects: camera effect rates; None renders a clean image.
        wild_textures: probability that an image's surfaces take a random photo texture over their colours
            (domain randomisation: the face's shape, not its skin, must carry the prediction).
        shading: "sh" (coloured spherical-harmonic light plus the rim light) or "lambert" (two hard
            directional lights, a weak ambient and a strong highlight: another renderer's look).
        patch_occluders: probability of one to three flat patches (stickers, bars, blur boxes) laid
            over the picture; the face under them is not face in the true maps.
        shadows: probability that the rim light is replaced by a sun from the camera's side and above
            that casts shadows (the nose on the cheek, hair, hats and hands on the face;
            :mod:`lsqface.synthetic.shadows`): its strength is drawn from 0.3-0.9 and the ambient light
            dimmed to 50-90 %. Drawn from a generator of its own, so the other draws (and the true maps)
            do not change with it.
    """

    size: int = 64
    supersample: int = 2
    identity_std: float = 1.0
    expression_std: float = 0.5
    albedo_std: float = 1.0
    roll_range: float = 180.0
    yaw_range: float = 35.0
    pitch_range: float = 20.0
    face_fraction: tuple[float, float] = (0.3, 0.7)
    shift: float = 0.12
    field_of_view: tuple[float, float] = (12.0, 50.0)
    lighting_std: float = 0.25
    ambient: tuple[float, float] = (0.7, 1.1)
    directional: tuple[float, float] = (0.0, 0.5)
    realism: float = 1.0
    occluders: float = 1.0
    long_hair: float = 0.35
    effects: EffectRates | None = field(default_factory=EffectRates)
    wild_textures: float = 0.0
    shading: str = "sh"
    patch_occluders: float = 0.0
    shadows: float = 0.0


def other_look(config: PhotoConfig) -> PhotoConfig:
    """The second synthetic test set's look, never trained on: another shading (two hard lights), other
    hair (mostly long), other occluders (flat patches instead of objects), a harsher camera; the caller
    gives it other backgrounds (procedural colour fields instead of photographs)."""
    return replace(config, shading="lambert", long_hair=0.8, occluders=0.0, patch_occluders=0.4, wild_textures=0.0,
                   effects=EffectRates(blur=0.4, noise=0.6, max_noise=0.04, jpeg=0.6, low_resolution=0.2, grayscale=0.0))


@dataclass
class PhotoFaces:
    """A batch of B synthetic photographs of size S with the fitted face's truth.

    Attributes:
        image: (B, 3, S, S) in [0, 1].
        correspondence: (B, 2, S, S) true (u, v) of the visible fitted face, 0 elsewhere.
        depth: (B, 1, S, S) camera z in mm there, 0 elsewhere.
        confidence: (B, 1, S, S) 1 where the fitted face is visible.
        intrinsics, rotation: (B, 3, 3); translation: (B, 3), so a model point X projects to K (R X + t).
        identity, expression, albedo: (B, N) coefficients; pose: (B, 3) yaw, pitch, roll in degrees.
        vertices: (B, V_fit, 3) camera-space fitted vertices, mm.
        landmarks_68: (B, 68, 2), landmarks_5: (B, 5, 2) in pixels.
        seeds: each face's seed.
    """

    image: torch.Tensor
    correspondence: torch.Tensor
    depth: torch.Tensor
    confidence: torch.Tensor
    intrinsics: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor
    identity: torch.Tensor
    expression: torch.Tensor
    albedo: torch.Tensor
    pose: torch.Tensor
    vertices: torch.Tensor
    landmarks_68: torch.Tensor
    landmarks_5: torch.Tensor
    seeds: list[int] = field(default_factory=list)


def _directional_noise(generator: torch.Generator, height: int, width: int, length: int = 9) -> torch.Tensor:
    """(1, H, W) zero-mean noise streaked along a random direction (hair strands, fabric weave)."""
    noise = torch.randn(1, 1, height, width, generator=generator)
    angle = uniform(generator, 0.0, np.pi)
    kernel = torch.zeros(length, length)
    centre = length // 2
    for t in torch.linspace(-centre, centre, 3 * length):
        kernel[int(round(centre + float(t) * np.sin(angle))), int(round(centre + float(t) * np.cos(angle)))] = 1.0
    kernel = kernel / kernel.sum()
    streaks = F.conv2d(F.pad(noise, (centre,) * 4, mode="reflect"), kernel[None, None])[0]
    return streaks / streaks.std().clamp_min(1e-6)


def _skin_detail(generator: torch.Generator, height: int, width: int) -> torch.Tensor:
    """(1, H, W) multiplicative skin texture: pores, blotches, sometimes freckles and blemishes."""
    fine = torch.randn(1, 1, height, width, generator=generator)
    blotches = F.interpolate(torch.randn(1, 1, max(2, height // 8), max(2, width // 8), generator=generator),
                             size=(height, width), mode="bicubic", align_corners=False)
    detail = uniform(generator, 0.01, 0.05) * fine + uniform(generator, 0.01, 0.06) * blotches
    if float(torch.rand((), generator=generator)) < 0.2:  # freckles and blemishes: sparse dark spots
        spots = (torch.rand(1, 1, height, width, generator=generator) < uniform(generator, 0.002, 0.02)).float()
        detail = detail - uniform(generator, 0.1, 0.3) * F.max_pool2d(spots, 3, 1, 1) * 0.5
    return 1.0 + detail[0]


def _patches(generator: torch.Generator, size: int, texture: torch.Tensor) -> torch.Tensor:
    """(4, S, S): colour and coverage of one to three flat patches (bars, discs, textured stickers)."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    colour = torch.zeros(3, size, size)
    cover = torch.zeros(1, size, size)
    for _ in range(1 + int(torch.randint(0, 3, (), generator=generator))):
        centre = torch.rand(2, generator=generator) * 0.6 + 0.2
        radius = torch.rand(2, generator=generator) * 0.15 + 0.05
        turn = uniform(generator, 0.0, np.pi)
        dx, dy = xs - float(centre[0]), ys - float(centre[1])
        u = (dx * np.cos(turn) + dy * np.sin(turn)) / float(radius[0])
        v = (-dx * np.sin(turn) + dy * np.cos(turn)) / float(radius[1])
        shape = (u.abs().maximum(v.abs()) if float(torch.rand((), generator=generator)) < 0.5 else (u**2 + v**2).sqrt()) < 1
        fill = texture if float(torch.rand((), generator=generator)) < 0.5 else torch.rand(3, 1, 1, generator=generator).expand(3, size, size)
        colour = torch.where(shape[None], fill, colour)
        cover = torch.maximum(cover, shape[None].float())
    return torch.cat([colour, cover])


class PhotoGenerator:
    """Draws synthetic photographs of whole heads; holds the head's fixed regions and accessory layout.

    Args:
        uv_model: the fitted UV-3DMM (its model is the narrow ICT face and gives the correspondence).
        head: the opaque ICT head (:func:`lsqface.synthetic.head.load_head` with the model's triangles).
    """

    def __init__(self, uv_model: UVMorphableModel, head: HeadModel) -> None:
        model = uv_model.model
        self.uv_model = uv_model
        self.head = head
        # The head's regions and accessories are laid out on ICT's own landmark vertices, whatever
        # landmarks the fitted model reports: the pictures do not change with that choice.
        self.head_landmarks_68 = np.asarray(ICT_LANDMARKS_68)
        self.regions = head_regions(head, self.head_landmarks_68)
        self.layout = accessory_layout(head, self.head_landmarks_68)
        self.triangles = torch.as_tensor(np.concatenate([head.triangles, self.layout.triangles + head.n_vertices]))
        centroid, self.face_width, self.centre_depth = model.framing()
        self.centre = torch.as_tensor(centroid, dtype=torch.float32)
        self.mean = torch.as_tensor(head.shape_mean)
        self.identity_basis = torch.as_tensor(head.identity_basis)
        self.expression_basis = torch.as_tensor(head.expression_basis)
        self.albedo_mean = torch.as_tensor(model.albedo_mean, dtype=torch.float32)
        self.albedo_basis = torch.as_tensor(model.albedo_basis, dtype=torch.float32)
        self.model = model
        uv = torch.zeros(head.n_vertices + self.layout.n_vertices, 2)
        uv[:FITTED_VERTEX_COUNT] = torch.as_tensor(uv_model.vertex_uv, dtype=torch.float32)
        self.vertex_uv = uv
        part = torch.as_tensor(head.part)
        gloss = torch.full((head.n_vertices,), 0.25)
        gloss[part == EYEBALL] = 1.0
        gloss[part == TEETH] = 0.5
        self.head_gloss = gloss

    def generate(self, seeds: list[int], config: PhotoConfig = PhotoConfig(), backgrounds: torch.Tensor | None = None,
                 textures: torch.Tensor | None = None) -> PhotoFaces:
        """One synthetic photograph per seed.

        Args:
            seeds: one integer per face.
            config: the distributions.
            backgrounds: (B, 3, S, S) in [0, 1] behind each head; None is mid grey.
            textures: (B, 3, S, S) in [0, 1], a second photo per image for fabric and wild textures; None: noise.
        """
        batch, size, factor = len(seeds), config.size, max(1, int(config.supersample))
        big = size * factor
        generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
        model = self.model
        coefficients = []
        for generator in generators:
            identity = config.identity_std * torch.randn(model.n_identity, generator=generator, dtype=torch.float64)
            expression = config.expression_std * torch.randn(model.n_expression, generator=generator, dtype=torch.float64)
            albedo = config.albedo_std * torch.randn(model.n_albedo, generator=generator, dtype=torch.float64)
            coefficients.append((identity, expression, albedo))
        identity = torch.stack([c[0] for c in coefficients])
        expression = torch.stack([c[1] for c in coefficients])
        albedo = torch.stack([c[2] for c in coefficients])
        shapes = (self.mean + basis_products(self.identity_basis, identity.float())
                  + basis_products(self.expression_basis, expression.float()))
        fitted_albedo = self.albedo_mean + basis_products(self.albedo_basis, albedo.float())

        all_vertices, colours, gloss, hair, cloth = [], [], [], [], []
        cameras, lights, keys = [], [], []
        normals_rest = torch.as_tensor(self.head.normals)
        for b, generator in enumerate(generators):
            cameras.append(sample_camera(generator, size, self.face_width, self.centre_depth, config.field_of_view,
                                         config.face_fraction, config.yaw_range, config.pitch_range, config.roll_range,
                                         config.shift))
            level = uniform(generator, *config.ambient)
            lighting = constant_lighting(level) + config.lighting_std * level * torch.randn(9, generator=generator, dtype=torch.float64)
            lights.append((1.0 + 0.08 * torch.randn(3, 1, generator=generator, dtype=torch.float64)) * lighting)
            direction = torch.nn.functional.normalize(torch.randn(3, generator=generator) * torch.tensor([1.0, 0.7, 0.4])
                                                      + torch.tensor([0.0, -0.3, -1.0]), dim=0)
            keys.append((direction, uniform(generator, *config.directional), 1.0 + 0.1 * torch.randn(3, generator=generator),
                         uniform(generator, 10.0, 60.0)))
            look = paint_head(self.head, self.regions, fitted_albedo[b], generator, config.realism)
            long_hair = look.hair_volume > 0 and float(torch.rand((), generator=generator)) < config.long_hair
            shape = shapes[b] + (look.hair_volume * look.hair_weight)[:, None] * normals_rest
            extras = place_accessories(self.layout, self.head, shapes[b], look.hair_colour, look.skin_colour, generator,
                                       self.head_landmarks_68, occluder_rate=config.occluders, long_hair=long_hair)
            all_vertices.append(torch.cat([shape, extras.vertices]))
            colours.append(torch.cat([look.vertex_colour, extras.colour]))
            gloss.append(torch.cat([self.head_gloss, extras.gloss]))
            curtain = torch.zeros(len(extras.gloss))
            start, end = self.layout.slices["curtain"]
            curtain[start:end] = 1.0
            hair.append(torch.cat([look.hair_weight + self.regions.brows * 0.5, curtain]))
            cloth.append(extras.cloth)

        intrinsics = torch.stack([c[0] for c in cameras])
        rotation = torch.stack([c[1] for c in cameras])
        camera_translation = torch.stack([c[2] for c in cameras])
        pose = torch.stack([c[3] for c in cameras])
        vertices = torch.stack(all_vertices) - self.centre
        posed = vertices @ rotation.float().transpose(1, 2) + camera_translation.float()[:, None]
        scaled = intrinsics.float().clone()
        scaled[:, :2] *= factor
        projected = posed @ scaled.transpose(1, 2)
        image_vertices = torch.cat([projected[..., :2] / projected[..., 2:], posed[..., 2:]], dim=-1)
        # Vertices at or behind the camera would wrap around the image: drop their triangles.
        image_vertices = torch.where(posed[..., 2:] > 1.0, image_vertices, torch.full_like(image_vertices, float("nan")))
        fragments = rasterize(image_vertices, self.triangles, big, big)
        triangle_id = fragments.triangle_id
        covered = triangle_id >= 0
        face = covered & (triangle_id < self.head.face_triangle_count)

        casting = [None] * batch  # per image: None, or the sun's direction of travel, its strength and the ambient's scale
        for b, seed in enumerate(seeds if config.shadows > 0 else ()):
            sun = torch.Generator().manual_seed(int(seed) + SHADOW_SEED_OFFSET)
            if float(torch.rand((), generator=sun)) < config.shadows:
                # From the camera's side and above (travelling away from the camera, y down), off to either side.
                towards = F.normalize(torch.randn(3, generator=sun) * torch.tensor([0.8, 0.5, 0.2])
                                      + torch.tensor([0.0, 0.4, 1.0]), dim=0)
                casting[b] = (towards, uniform(sun, 0.3, 0.9), uniform(sun, 0.5, 0.9))
        visibility = torch.ones(batch, big, big)
        shadowed = [b for b in range(batch) if casting[b] is not None]

        normals = torch.nan_to_num(vertex_normals(torch.nan_to_num(posed), self.triangles))
        cloth_tensor = torch.stack(cloth)
        attributes = torch.cat([
            torch.stack(colours), normals, self.vertex_uv.expand(batch, -1, -1), posed[..., 2:].nan_to_num(),
            torch.stack(gloss)[..., None], torch.stack(hair)[..., None],
            torch.cat([torch.zeros(batch, self.head.n_vertices), cloth_tensor], dim=1)[..., None],
        ] + ([posed.nan_to_num()] if shadowed else []), dim=-1)
        pixels = interpolate(attributes, fragments, image_vertices.nan_to_num(), self.triangles).permute(0, 3, 1, 2)
        if shadowed:
            index = torch.tensor(shadowed)
            points = pixels[index, 12:15].flatten(2).transpose(1, 2)  # (S, big^2, 3) camera-space surface points
            surface_normals = F.normalize(pixels[index, 3:6], dim=1).flatten(2).transpose(1, 2)
            directions = torch.stack([casting[b][0] for b in shadowed])
            # Absent accessories' vertices are NaN: left out of the map, not drawn at the camera.
            lit = light_visibility(posed[index], self.triangles, directions, points, normals=surface_normals,
                                   resolution=big)
            visibility[index] = lit.reshape(len(shadowed), big, big).float()
        albedo_image, normal_image, uv_image = pixels[:, 0:3], F.normalize(pixels[:, 3:6], dim=1), pixels[:, 6:8]
        depth_image, gloss_image, hair_image, cloth_image = pixels[:, 8:9], pixels[:, 9:10], pixels[:, 10:11], pixels[:, 11:12]

        images = []
        for b, generator in enumerate(generators):
            texture = (F.interpolate(textures[b:b + 1], size=(big, big), mode="bilinear", align_corners=False)[0]
                       if textures is not None else 0.5 + 0.15 * torch.randn(3, big, big, generator=generator))
            surface = albedo_image[b] * _skin_detail(generator, big, big)
            strands = _directional_noise(generator, big, big)
            surface = surface * (1.0 + 0.35 * hair_image[b].clamp(0, 1) * strands).clamp_min(0.0)
            fabric = cloth_image[b].clamp(0, 1)
            surface = surface * (1 - 0.6 * fabric) + 0.6 * fabric * texture * surface.mean(0, keepdim=True) * 2.0
            if float(torch.rand((), generator=generator)) < config.wild_textures:
                mix = uniform(generator, 0.3, 0.8)
                surface = (1 - mix) * surface + mix * texture.roll(shifts=(big // 3, big // 5), dims=(1, 2))
            n = normal_image[b].permute(1, 2, 0)
            direction, strength, tint, shininess = keys[b]
            ambient_scale = 1.0
            if casting[b] is not None:
                direction, strength, ambient_scale = casting[b]
            if config.shading == "lambert":
                fill = F.normalize(direction * torch.tensor([-1.0, 1.0, 1.0]), dim=0)
                key = (-(n @ direction)).clamp_min(0.0) * (visibility[b] if casting[b] is not None else 1.0)
                shading = (0.25 + 0.9 * key + 0.35 * (-(n @ fill)).clamp_min(0.0))[None]
                strength, shininess = max(strength, 0.3), 80.0
            else:
                shading = sh_shading(n, lights[b].float()[None, None]).permute(2, 0, 1).clamp_min(0.0)
            facing = (-(n @ direction)).clamp_min(0.0)[None]  # normals towards the camera have negative z
            halfway = F.normalize(-direction + torch.tensor([0.0, 0.0, -1.0]), dim=0)
            specular = (-(n @ halfway)).clamp_min(0.0) ** shininess
            if casting[b] is not None:
                shading = ambient_scale * shading
                facing = facing * visibility[b][None]
                specular = specular * visibility[b]
            colour = surface * (shading + strength * tint[:, None, None] * facing)
            colour = colour + strength * gloss_image[b] * 0.5 * specular[None] * tint[:, None, None]
            background = (F.interpolate(backgrounds[b:b + 1], size=(big, big), mode="bilinear", align_corners=False)[0]
                          if backgrounds is not None else torch.full((3, big, big), 0.5))
            mask = covered[b][None].float()
            picture = mask * colour.clamp(0, 1) + (1 - mask) * background
            if float(torch.rand((), generator=generator)) < config.patch_occluders:
                patches = _patches(generator, big, texture)
                picture = picture * (1 - patches[3:]) + patches[:3] * patches[3:]
                face[b] &= patches[3] < 0.5
            picture = F.avg_pool2d(picture[None], factor)[0] if factor > 1 else picture
            if config.effects is not None:
                picture = camera_effects(picture, generator, config.effects)
            images.append(picture)

        face_float = face[:, None].float()
        pooled_face = F.avg_pool2d(face_float, factor) if factor > 1 else face_float
        def pooled(values: torch.Tensor) -> torch.Tensor:
            total = F.avg_pool2d(values * face_float, factor) if factor > 1 else values * face_float
            return total / pooled_face.clamp_min(1e-6)
        confidence = (pooled_face >= 0.5).float()
        fitted = posed[:, :FITTED_VERTEX_COUNT].double()
        landmark_68, landmark_5 = model.landmark_points(fitted.numpy())

        def to_pixels(points):
            points = torch.as_tensor(points) @ intrinsics.transpose(1, 2)
            return (points[..., :2] / points[..., 2:]).float()

        return PhotoFaces(
            image=torch.stack(images).float(),
            correspondence=pooled(uv_image) * confidence,
            depth=pooled(depth_image) * confidence,
            confidence=confidence,
            intrinsics=intrinsics, rotation=rotation,
            translation=camera_translation - (rotation @ self.centre.double()[:, None])[..., 0],
            identity=identity, expression=expression, albedo=albedo, pose=pose, vertices=fitted,
            landmarks_68=to_pixels(landmark_68), landmarks_5=to_pixels(landmark_5), seeds=[int(s) for s in seeds],
        )
