#!/usr/bin/env bash
# A one-node SLURM cluster on this machine (root; Debian's slurm-wlm and munge), for the launcher
# tests: installs what is missing, writes the config, starts munged, slurmctld and slurmd unless
# they run already, and waits until the node takes jobs. Idempotent. Prints `started NAME PID` for
# each daemon it started, so a caller can stop exactly those (tests/test_launching.py does).
set -euo pipefail

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

running() {  # running PIDFILE: the pid file names a live process
  [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

# munge: a key, directories owned by munge, the daemon run as munge.
install -d -o munge -g munge -m 700 /etc/munge /var/log/munge /var/lib/munge
install -d -o munge -g munge -m 755 /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
  head -c 1024 /dev/urandom >/etc/munge/munge.key
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
if ! running /run/munge/munged.pid; then
  runuser -u munge -- /usr/sbin/munged
  echo "started munged $(cat /run/munge/munged.pid)"
fi
munge -n | unmunge >/dev/null

# slurm: one node with this machine's CPUs and most of its memory, one default partition.
host=$(hostname)
memory_mib=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
install -d /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
cat >/etc/slurm/slurm.conf.new <<EOF
ClusterName=scalinglab
SlurmctldHost=${host}
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmUser=root
SlurmdUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ReturnToService=2
NodeName=${host} CPUs=$(nproc) RealMemory=${memory_mib} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
EOF
mv /etc/slurm/slurm.conf.new /etc/slurm/slurm.conf
if ! running /run/slurm/slurmctld.pid; then
  /usr/sbin/slurmctld
  for _ in $(seq 50); do running /run/slurm/slurmctld.pid && break; sleep 0.2; done
  echo "started slurmctld $(cat /run/slurm/slurmctld.pid)"
fi
if ! running /run/slurm/slurmd.pid; then
  /usr/sbin/slurmd
  for _ in $(seq 50); do running /run/slurm/slurmd.pid && break; sleep 0.2; done
  echo "started slurmd $(cat /run/slurm/slurmd.pid)"
fi

# The node takes jobs once it is idle (or busy); a node left down by an earlier run is resumed.
for _ in $(seq 60); do
  state=$(sinfo -h -n "$host" -o %T 2>/dev/null || true)
  case "$state" in
    idle* | mixed* | allocated* | completing*) exit 0 ;;
    down* | drain*) scontrol update nodename="$host" state=resume 2>/dev/null || true ;;
  esac
  sleep 1
done
echo "slurm node ${host} is not up (state: ${state:-none}); see /var/log/slurm/" >&2
exit 1
