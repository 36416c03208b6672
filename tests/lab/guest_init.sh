#!/bin/sh
# PID 1 of the lab guest, started by the initramfs from the shared working tree
# (/netsleuth, read-only 9p).  Mounts the kernel filesystems, runs the command
# the runner left in /lab/command.sh (read-write 9p share) with a time limit,
# stores its output and exit status beside it, and powers off.
export PATH=/run/lab/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 PYTHONPATH=/netsleuth PYTHONDONTWRITEBYTECODE=1 NETSLEUTH_LAB_GUEST=1

# busybox (static) where it can: every exec of a dynamic binary costs ~0.1 s under TCG.
busybox mount -t proc proc /proc
busybox mount -t sysfs sys /sys
busybox mkdir -p /dev/pts /dev/shm
busybox mount -t devpts devpts /dev/pts
busybox mount -t tmpfs tmpfs /dev/shm
busybox mount -t tmpfs tmpfs /run
busybox mount -t tmpfs tmpfs /tmp
busybox mount -t tracefs tracefs /sys/kernel/tracing
busybox mount -t debugfs debugfs /sys/kernel/debug
busybox mount -t cgroup2 cgroup2 /sys/fs/cgroup
busybox mount -t bpf bpf /sys/fs/bpf
busybox mkdir -p /run/labimage  # the image's vmlinux, for the nested VM
busybox mount -t 9p -o trans=virtio,version=9p2000.L,ro labimage /run/labimage
busybox hostname lab
ip link set lo up

# The project is not installed in the image: run it from the share.
mkdir -p /run/lab/bin
printf '#!/bin/sh\nexec python3 -m wizard.main "$@"\n' > /run/lab/bin/netsleuth
chmod +x /run/lab/bin/netsleuth

cut -d' ' -f1 /proc/uptime > /lab/boot_uptime
cd /netsleuth
timeout -k 5 "$(cat /lab/timeout)" sh /lab/command.sh > /lab/output 2>&1 < /dev/null
echo $? > /lab/exit_status
cut -d' ' -f1 /proc/uptime > /lab/end_uptime
sync
busybox poweroff -f  # no init system in the image to ask
