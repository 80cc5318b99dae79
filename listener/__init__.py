"""listener: turns pending AI model rows into finished 3D models, exactly once."""

__version__ = "0.1.0"
