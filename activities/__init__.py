"""The trip-package example's services and activities."""
