#!/bin/busybox sh
# The guest's /init (busybox): load the modules, mount the host's tree read-only over 9p,
# give it the guest's own /proc, /sys, /dev, /tmp, configfs and debugfs, then run the
# per-boot script (appended to the initramfs as /lane/run.sh) inside it and power off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# Kernel log lines would interleave with our output on the console.
echo 1 > /proc/sys/kernel/printk
for m in $(cat /lane/modules.order); do
    insmod "/lane/modules/$m.ko" || echo "lane: insmod $m failed"
done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 host /host \
    || { echo "lane: 9p mount failed"; poweroff -f; }
mount -t proc proc /host/proc
mount -t sysfs sysfs /host/sys
mount -t devtmpfs devtmpfs /host/dev
mount -t configfs configfs /host/sys/kernel/config
mount -t debugfs debugfs /host/sys/kernel/debug
mount -t tmpfs tmpfs /host/tmp
mount -t tmpfs tmpfs /host/run
mkdir -p /host/dev/shm && mount -t tmpfs tmpfs /host/dev/shm
# The repository may live under /tmp or /run (a CI checkout), which the tmpfs mounts above
# just covered: mount it again at its own path from its own share.
repo="$(sed -n 's/.*lane\.repo=\([^ ]*\).*/\1/p' /proc/cmdline)"
if [ -n "$repo" ]; then
    mkdir -p "/host$repo" 2>/dev/null
    mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 repo "/host$repo" \
        || { echo "lane: 9p mount of $repo failed"; poweroff -f; }
fi
# No modules.dep and no /lib/modules for this kernel on the host tree: modprobe is a stub
# (everything needed is loaded above), as machine.md recommends.
mount -o bind /lane/modprobe /host/usr/bin/kmod
# The kernel runs /proc/sys/fs/ocfs2/nm/hb_ctl_path (at put_super) in this initramfs root,
# not in the host tree: this helper enters the tree and runs whatever the guest task put
# at /tmp/lane-hb-ctl there (our ocfs2_hb_ctl or the C one).
printf '#!/bin/sh\nexec /bin/chroot /host /bin/sh /tmp/lane-hb-ctl "$@"\n' > /lane/hb_ctl
chmod 755 /lane/hb_ctl
ip link set lo up
hostname "$(sed -n 's/.*lane\.hostname=\([^ ]*\).*/\1/p' /proc/cmdline)"
cp /lane/run.sh /host/tmp/lane-run.sh
chroot /host /bin/sh /tmp/lane-run.sh </dev/null
echo "lane: run.sh exited $?"
sync
poweroff -f
