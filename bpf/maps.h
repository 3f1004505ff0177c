/* SPDX-License-Identifier: GPL-2.0 */
/* Maps and helpers shared by every hook.
 *
 * Cost rules (measured on the target VM with kernel.bpf_stats_enabled): a
 * hash-map update costs ~500 ns, an array slot ~10 ns, a ring-buffer record
 * ~300-600 ns.  So the fork/exit/free path touches arrays only, and what user
 * space can know (parents, comm of a reaped pid) is not kept here at all. */
#ifndef SPAWNWATCH_MAPS_H
#define SPAWNWATCH_MAPS_H

BPF_RINGBUF_OUTPUT(sw_events, SW_RINGBUF_PAGES);

/* Events that could not be reserved, by event type: a ring buffer reports no
 * loss by itself, so every failed reserve is counted here.  Mappable, so user
 * space reads it in place at every drain; shared, not per CPU, as only a loss
 * pays for the atomic add. */
BPF_F_TABLE("array", __u32, __u64, sw_lost_stats, SW_EVENT_TYPE_MAX, BPF_F_MMAPABLE);

/* argv captured at execve entry, emitted when the exec commits.  The thread
 * may change CPUs in between (sched_exec), so slots are per thread, indexed by
 * tid and tagged with it (hdr.pid) so a colliding tid is detected.  A held
 * exec stays in its slot until its process is told (births.h).  Mappable: user
 * space reads a held exec in place when it announces the process. */
BPF_F_TABLE("array", __u32, struct sw_exec_event, sw_exec_slots, SW_EXEC_SLOTS, BPF_F_MMAPABLE);

/* Processes that exited and await their reap, indexed by pid and tagged with
 * it: sched_process_free also fires for threads, which must not emit. */
BPF_ARRAY(sw_dead_pids, __u32, SW_DEAD_SLOTS);

/* Exits that found their dead slot held by another pid still awaiting its
 * reap (index 0): that pid's reap is not reported by the kernel side. */
BPF_PERCPU_ARRAY(sw_dead_pids_stats, __u64, 1);

/* Forks held back (births.h), indexed by pid and tagged with it.  Mappable:
 * user space reads it in place to announce forks held too long. */
BPF_F_TABLE("array", __u32, struct sw_birth, sw_births, SW_BIRTH_SLOTS, BPF_F_MMAPABLE);

/* Short lives tallied per spawner (tallies.h): SW_TALLY_SLOTS per CPU, CPU
 * by CPU.  Mappable: user space reads it in place for tallies no record told. */
BPF_F_TABLE("array", __u32, struct sw_tally, sw_tallies, SW_TALLY_SLOTS * SW_NR_CPUS, BPF_F_MMAPABLE);

/* The hash of each command line user space holds whole, in the slot of the
 * hash modulo SW_ARGV_TOLD_SLOTS (tallies.h): a short exec'd life that ran one
 * of them is counted, not told.  User space writes it (mapped in place), as
 * only it knows which it holds, and which it wants told each time. */
BPF_F_TABLE("array", __u32, __u64, sw_argv_told, SW_ARGV_TOLD_SLOTS, BPF_F_MMAPABLE);

static __always_inline void sw_count_lost(__u32 type)
{
	__u64 *lost = sw_lost_stats.lookup(&type);

	if (lost)
		__sync_fetch_and_add(lost, 1);
}

static __always_inline void sw_fill_header(struct sw_header *hdr, __u16 type, __u16 size, __u32 pid)
{
	hdr->type = type;
	hdr->size = size;
	hdr->pid = pid;
	hdr->ts_ns = bpf_ktime_get_boot_ns();
	hdr->cgroup_id = bpf_get_current_cgroup_id();
	hdr->ppid = 0;
	hdr->flags = 0;
}

/* Marks `pid` dead, awaiting its reap; returns the pid still awaiting its
 * own reap whose slot this took (0 when none). */
static __always_inline __u32 sw_take_dead_slot(__u32 pid)
{
	__u32 slot = pid % SW_DEAD_SLOTS;
	__u32 zero = 0;
	__u32 *dead = sw_dead_pids.lookup(&slot);
	__u32 evicted = 0;
	__u64 *collisions;

	if (!dead)
		return 0;
	if (*dead && *dead != pid) {
		evicted = *dead;
		collisions = sw_dead_pids_stats.lookup(&zero);
		if (collisions)
			(*collisions)++;
	}
	*dead = pid;
	return evicted;
}

static __always_inline bool sw_argv_known(__u64 hash)
{
	__u32 slot = hash % SW_ARGV_TOLD_SLOTS;
	__u64 *told = sw_argv_told.lookup(&slot);

	return told && hash && *told == hash;
}

#endif /* SPAWNWATCH_MAPS_H */
