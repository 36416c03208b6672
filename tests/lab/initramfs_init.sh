#!/bin/sh
# /init of the lab's tiny initramfs (busybox): load the modules needed to reach
# the root disk (virtio-blk, ext4) and the 9p shares, mount them, and hand over
# to the guest init that lives in the shared working tree.
/bin/busybox --install -s /bin
mkdir -p /proc /dev /newroot
mount -t proc proc /proc
mount -t devtmpfs dev /dev
for m in $(cat /modules/order); do
    insmod "/modules/$m" || echo "initramfs: insmod $m failed"
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
mount -t ext4 /dev/vda /newroot || { echo "initramfs: cannot mount /dev/vda"; poweroff -f; }
opts=trans=virtio,version=9p2000.L,msize=262144,cache=none
mount -t 9p -o "$opts,ro" netsleuth /newroot/netsleuth || { echo "initramfs: no netsleuth share"; poweroff -f; }
mount -t 9p -o "$opts" lab /newroot/lab || { echo "initramfs: no lab share"; poweroff -f; }
mount -o move /dev /newroot/dev
umount /proc
exec switch_root /newroot /bin/sh /netsleuth/tests/lab/guest_init.sh
