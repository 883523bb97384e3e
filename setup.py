"""segjax: MMSegmentation's model zoo and tools on JAX."""
from setuptools import find_packages, setup

setup(
    name="segjax",
    version="0.1.0",
    description="MMSegmentation rebuilt on JAX/Flax: models, datasets, training, mmseg checkpoint import",
    python_requires=">=3.10",
    packages=find_packages(include=["segjax", "segjax.*"]),
    install_requires=[
        "jax>=0.4.35",
        "flax>=0.10",
        "optax>=0.2.3",
        "orbax-checkpoint>=0.10",
        "ml-collections>=0.1.1",
        "clu>=0.0.12",
        "grain>=0.2.10",
        "numpy>=1.24",
        "pillow>=10.0",
        "opencv-python-headless>=4.8",
        "tensorboardX>=2.6",
        "tqdm>=4.60",
        "absl-py>=1.4",
        "flatbuffers>=23.5",  # jax.export serialization (tools/export.py)
        "scipy>=1.10",  # .mat annotations (VOC aug, Pascal Context, COCO-Stuff 10k converters)
        # Packed datasets (segjax/data/packed.py): TFDS array_record folders, without TensorFlow.
        "tensorflow-datasets>=4.9.3",
        "array-record>=0.5",
        "importlib-resources>=5.0",  # needed by tensorflow-datasets' builders, not declared by it
        "pyyaml>=5.4",  # mmseg's metafiles (configs/zoo.py: the zoo table and published mIoU)
    ],
    extras_require={
        # Exact pin: any other torch makes pip download a multi-GB CUDA build.
        "torch": ["torch==2.13.0"],
        "tools": ["matplotlib>=3.6"],  # tools/analyze_logs.py
        # nbclient/nbformat/ipykernel run experiments/notebooks headless in the tests.
        "test": ["pytest>=7.0", "pytest-xdist>=3.0", "torch==2.13.0", "matplotlib>=3.6", "nbclient>=0.7",
                 "nbformat>=5.7", "ipykernel>=6.0"],
    },
)
