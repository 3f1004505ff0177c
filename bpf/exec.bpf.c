/* SPDX-License-Identifier: GPL-2.0 */
/* argv lives in user memory only until the exec replaces the address space:
 * copy it at syscall entry into the thread's slot, emit it once
 * sched_process_exec confirms the exec succeeded, or hold it there with the
 * process's held fork (births.h).  A failed exec leaves its slot to be
 * overwritten. */

static __always_inline int sw_capture_argv(const char *const *argv)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u32 slot = tid % SW_EXEC_SLOTS;
	struct sw_exec_event *event = sw_exec_slots.lookup(&slot);
	/* One more pointer than we keep, to tell whether argv goes on. */
	const char *pointers[SW_ARGV_MAX_ARGS + 1];
	__u32 offset = 0;
	__u32 argc = 0;
	__u32 flags = 0;
	long len;

	if (!event)
		return 0;
	if (event->holder) {
		/* A held exec goes out before its slot is written over. */
		sw_flush_held(event->holder);
		if (event->holder)
			return 0; /* another CPU is sending it: this exec's argv is read from /proc */
	}

	/* One read for the whole pointer array: each user-memory read costs
	 * ~150 ns here.  It fails (zeroing the array) only when the array ends
	 * near an unmapped page; then read pointer by pointer. */
	if (bpf_probe_read_user(pointers, sizeof(pointers), argv)) {
		for (int i = 0; i <= SW_ARGV_MAX_ARGS; i++) {
			if (bpf_probe_read_user(&pointers[i], sizeof(pointers[i]), &argv[i]) || !pointers[i])
				break;
		}
	}

	for (int i = 0; i < SW_ARGV_MAX_ARGS; i++) {
		if (!pointers[i])
			goto done;
		if (offset > SW_ARGV_BYTES - SW_ARG_MAX_BYTES) {
			flags |= SW_FLAG_ARGV_TRUNCATED;
			goto done;
		}
		len = bpf_probe_read_user_str(&event->argv[offset], SW_ARG_MAX_BYTES, pointers[i]);
		if (len < 0) {
			/* Not faulted in yet (e.g. a string literal in a child that
			 * never touched that page since fork): user space reads
			 * /proc/<pid>/cmdline instead. */
			flags |= SW_FLAG_ARGV_MISSING | SW_FLAG_ARGV_TRUNCATED;
			goto done;
		}
		/* A read that filled its cap cut its argument (len is at most the cap:
		 * the quotient is 1 just then).  Without a branch: the verifier walks
		 * each path of each of the loop's copies, and this one, branched, took
		 * it 445,000 steps and a second and more of start-up per program. */
		flags |= ((__u32)len / SW_ARG_MAX_BYTES) * SW_FLAG_ARGV_TRUNCATED;
		offset += len;
		argc++;
	}
	if (pointers[SW_ARGV_MAX_ARGS])
		flags |= SW_FLAG_ARGV_TRUNCATED;
done:
	event->hdr.pid = tid; /* the slot's tag */
	event->hdr.flags = flags;
	event->argc = argc;
	event->argv_size = offset;
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_execve)
{
	return sw_capture_argv((const char *const *)args->argv);
}

TRACEPOINT_PROBE(syscalls, sys_enter_execveat)
{
	return sw_capture_argv((const char *const *)args->argv);
}

#ifdef SW_HOLD_EXECS
#ifndef SW_ENGINE_CLIENT
#define SW_ENGINE_CLIENT(comm) 0 /* the loader names them */
#endif
#define SW_HASH_PRIME 0x100000001b3ULL
_Static_assert(offsetof(struct sw_exec_event, argv) % 8 == 0, "argv is hashed a word at a time");

/* Command lines up to this many bytes are hashed, and so tallied (tallies.h);
 * longer ones come in a record each.  A loop the verifier walks once per turn
 * (bcc cannot pass bpf_loop a callback): 64 words cost it 5,000 steps. */
#define SW_HASHED_ARGV_BYTES 512

/* The keyed hash of the command line captured in `event`: its flags, argc,
 * size and bytes, a word at a time, then mixed whole.  0 when it is longer
 * than SW_HASHED_ARGV_BYTES or was not read (user space reads /proc), never
 * else. */
static __always_inline __u64 sw_argv_hash(const struct sw_exec_event *event)
{
	/* argv is 8-byte aligned in the slot (checked above): read by words, each
	 * index masked so the verifier sees it in bounds. */
	const __u64 *words = (const __u64 *)event->argv;
	__u32 size = event->argv_size;
	__u64 hash = SW_ARGV_HASH_KEY ^ ((__u64)size << 32 | (__u64)event->hdr.flags << 24 | event->argc);
	__u32 whole, tail;
	__u64 word;

	if (size > SW_HASHED_ARGV_BYTES || event->hdr.flags & SW_FLAG_ARGV_MISSING)
		return 0;
	whole = size / 8;
#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < SW_HASHED_ARGV_BYTES / 8; i++) {
		if (i >= whole)
			break;
		hash = (hash ^ words[i & (SW_HASHED_ARGV_BYTES / 8 - 1)]) * SW_HASH_PRIME;
		hash ^= hash >> 29;
	}
	tail = size % 8;
	if (tail) {
		/* the bytes past the command line are an earlier capture's: masked off */
		word = words[whole & (SW_HASHED_ARGV_BYTES / 8 - 1)] & ((1ULL << (tail * 8)) - 1);
		hash = (hash ^ word) * SW_HASH_PRIME;
	}
	hash ^= hash >> 33;
	hash *= 0xff51afd7ed558ccdULL;
	hash ^= hash >> 33;
	hash *= 0xc4ceb9fe1a85ec53ULL;
	hash ^= hash >> 33;
	return hash ? hash : 1;
}

/* Keeps the exec captured in `event`, exec slot `index`, held with the fork
 * `birth` holds for `pid` (births.h); false when that fork went out meanwhile
 * (the exec then goes out as any other). */
static __always_inline bool sw_hold_exec(struct sw_birth *birth, struct sw_exec_event *event, __u32 index, __u32 pid)
{
	__u64 alive = SW_BIRTH_TAG(pid, SW_BIRTH_ALIVE);

	if (*(volatile __u64 *)sw_birth_tag(birth) != alive)
		return false;
	birth->exec_slot = index;
	event->argv_hash = sw_argv_hash(event);
	event->holder = pid;
	sw_compiler_barrier(); /* both before the state that points at them */
	if (__sync_val_compare_and_swap(sw_birth_tag(birth), alive, SW_BIRTH_TAG(pid, SW_BIRTH_EXECED)) == alive)
		return true;
	event->holder = 0;
	return false;
}
#endif

TRACEPOINT_PROBE(sched, sched_process_exec)
{
	/* A non-leader thread that execs takes over the leader's pid: the
	 * capture was tagged with its old one. */
	__u32 old_tid = args->old_pid;
	__u32 slot = old_tid % SW_EXEC_SLOTS;
	struct sw_exec_event *event = sw_exec_slots.lookup(&slot);
	struct sw_birth *birth = sw_held_birth(args->pid);
	__u32 flags, argv_size;

	if (event && event->holder)
		sw_flush_held(event->holder); /* another process's held exec goes first */
	if (!event || event->holder) {
		/* none, or being sent on another CPU: this exec cannot be told */
		if (birth)
			sw_flush_birth(birth);
		if (event)
			sw_count_lost(SW_EVENT_EXEC);
		return 0;
	}
	if (event->hdr.pid == old_tid) {
		flags = event->hdr.flags;
		argv_size = event->argv_size;
		if (argv_size > SW_ARGV_BYTES)
			argv_size = SW_ARGV_BYTES;
	} else {
		/* Began before we attached, or a colliding tid took the slot. */
		flags = SW_FLAG_ARGV_MISSING | SW_FLAG_ARGV_TRUNCATED;
		argv_size = 0;
		event->argc = 0;
	}
	event->argv_size = argv_size;

	sw_fill_header(&event->hdr, SW_EVENT_EXEC, offsetof(struct sw_exec_event, argv) + argv_size,
		       args->pid);
	event->hdr.flags = flags;
	event->forked_ns = 0;
	event->exited_ns = 0;
	event->reaped_ns = 0;
	event->argv_hash = 0;
	event->reserved = 0;
	bpf_get_current_comm(event->hdr.comm, SW_COMM_LEN);
	TP_DATA_LOC_READ_STR(event->filename, filename, SW_FILENAME_LEN);
#ifdef SW_HOLD_EXECS
	/* A container engine's client goes out at once: user space reads its environment
	 * (the engine it talks to) while it runs. */
	if (birth && !SW_ENGINE_CLIENT((const __u64 *)event->hdr.comm) && sw_hold_exec(birth, event, slot, args->pid))
		return 0;
#endif
	/* A held fork goes out before the exec that ends its hold (births.h). */
	if (birth)
		sw_flush_birth(birth);
	if (sw_events.ringbuf_output(event, sw_exec_size(event), SW_SUBMIT_FLAGS))
		sw_count_lost(SW_EVENT_EXEC);
	sw_release_exec(event);
	return 0;
}
