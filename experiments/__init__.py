"""Presets per paper table/figure, the runner that executes them, and report builders."""
