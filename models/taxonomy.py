"""Detector classes and their place in the prohibited-items catalogue (禁止寄递物品指导目录).

The mapping is data: it is written into the model manifest, and the gateway names the category in
every alert from the manifest, never from this module.
"""

from __future__ import annotations

from typing import Final

# Order is the model's class index; changing it changes the model's output layout.
CLASSES: Final[tuple[str, ...]] = (
    "firearm",
    "knife",
    "ammunition",
    "explosive_device",
    "organic_mass",
    "liquid_container",
    "gas_can",
    "lithium_battery",
)

# class -> catalogue category. `catalogue_no` is the item number in the 2016 catalogue where the
# class falls under one; lithium batteries are restricted (dangerous goods, UN3480/UN3481) rather
# than a numbered category, so they carry no number.
CATEGORIES: Final[dict[str, dict[str, object]]] = {
    "firearm": {
        "category": "firearms_and_parts",
        "zh": "枪支（含仿制品、主要零部件）",
        "catalogue_no": 1,
        "alert": "firearm or firearm part",
    },
    "ammunition": {
        "category": "ammunition",
        "zh": "弹药",
        "catalogue_no": 1,
        "alert": "ammunition",
    },
    "knife": {
        "category": "controlled_knives",
        "zh": "管制器具（管制刀具）",
        "catalogue_no": 2,
        "alert": "knife or blade",
    },
    "explosive_device": {
        "category": "explosives",
        "zh": "爆炸物品",
        "catalogue_no": 3,
        "alert": "explosive-like device",
    },
    "gas_can": {
        "category": "compressed_gases",
        "zh": "压缩和液化气体及其容器",
        "catalogue_no": 4,
        "alert": "compressed-gas container",
    },
    "liquid_container": {
        "category": "flammable_liquids",
        "zh": "易燃液体",
        "catalogue_no": 5,
        "alert": "liquid container",
    },
    "organic_mass": {
        "category": "drugs_and_paraphernalia",
        "zh": "毒品及吸毒工具",
        "catalogue_no": 12,
        # Two-channel X-ray cannot tell a drug from sugar by material; the alert says what was seen.
        "alert": "suspicious organic mass",
    },
    "lithium_battery": {
        "category": "lithium_batteries",
        "zh": "锂电池",
        "catalogue_no": None,
        "alert": "lithium battery pack",
    },
}
