"""The container image (docker/Dockerfile), built and run here: scripts/image.sh --test makes the
Debian base with debootstrap (cached in /var/cache/grelay-image between runs), builds the image
with buildah, runs its grelay with `buildah run --isolation chroot` in front of a grpcio backend
on loopback and checks the user, the HEALTHCHECK, a call and a SIGTERM drain (docs/deployment.md)."""
import os
import subprocess

from harness import ROOT


def test_image_builds_serves_a_call_and_drains():
    r = subprocess.run(["bash", os.path.join(ROOT, "scripts", "image.sh"), "--test"], capture_output=True,
                       text=True, timeout=900)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "config: user 10001:10001, stop signal SIGTERM, ports 8080/tcp 9901/tcp" in out, out
    assert "default configuration passes --check; no compiler in the runtime stage" in out, out
    assert "HEALTHCHECK passes" in out, out
    assert "a gRPC call through the image's grelay: OK, answered by image-backend" in out, out
    assert "SIGTERM with a call in flight: the call finished OK" in out, out
    assert "drained and exited 0" in out and "image test passed" in out, out
    uid = [line for line in out.splitlines() if "grelay runs as pid" in line]
    assert uid and not uid[0].endswith("uid 0"), out
