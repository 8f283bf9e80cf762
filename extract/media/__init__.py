"""Decoding of audio and video inputs into arrays the encoders take."""
