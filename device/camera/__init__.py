"""Frame sources: the FrameSource port and its adapters (picamera2, OpenCV, image folder)."""
