#!/usr/bin/env python3
"""Which functions of an executable a run of it calls, in the order of their
first call: used by scripts/symbol-order to write the link order of `engine`.

usage: scripts/trace-functions.py OUT -- BINARY [ARGS...]

Runs BINARY under ptrace (Linux x86-64) with a one-shot breakpoint (int3) on
the first byte of every function its symbol table names (`nm`); each hit
writes the function's symbol to OUT, restores the byte, and lets the thread
go on, so a function costs one stop, the first time any thread calls it.
New threads are followed; signals pass through. It ends when BINARY exits
(stop a daemon with SIGTERM from outside). The traced process writes
breakpoints into its own code pages: never measure memory under it.
"""
import ctypes, os, re, signal, subprocess, sys

libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
PTRACE_TRACEME, PTRACE_PEEKUSER, PTRACE_POKEUSER, PTRACE_CONT = 0, 3, 6, 7
PTRACE_SETOPTIONS = 0x4200
O_TRACECLONE, O_EXITKILL = 0x8, 0x100000
RIP = 16 * 8
WALL = 0x40000000

out_path = sys.argv[1]
argv = sys.argv[sys.argv.index("--") + 1 :]
binary = os.path.realpath(argv[0])

# Function symbols of the executable: address -> name (first name wins).
funcs = {}
nm = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True, check=True).stdout
for line in nm.splitlines():
    m = re.match(r"([0-9a-f]+) [tTwW] (\S+)$", line)
    if m:
        funcs.setdefault(int(m.group(1), 16), m.group(2))
print(f"trace-functions: {len(funcs)} functions in {binary}", file=sys.stderr)

pid = os.fork()
if pid == 0:
    try:
        libc.ptrace(PTRACE_TRACEME, 0, None, None)
        os.execv(argv[0], argv)
    finally:
        os._exit(127)
_, status = os.waitpid(pid, 0)  # stopped at exec
base = None
for line in open(f"/proc/{pid}/maps"):
    parts = line.split()
    if len(parts) >= 6 and parts[5] == binary and int(parts[2], 16) == 0:
        base = int(parts[0].split("-")[0], 16)
        break
assert base is not None, "executable not mapped"
libc.ptrace(PTRACE_SETOPTIONS, pid, None, ctypes.c_void_p(O_TRACECLONE | O_EXITKILL))

mem = os.open(f"/proc/{pid}/mem", os.O_RDWR)
orig = {}
for a in funcs:
    addr = base + a
    b = os.pread(mem, 1, addr)
    orig[addr] = b
    os.pwrite(mem, b"\xcc", addr)

code = 1
written = set()
out = open(out_path, "w")
alive = {pid}
libc.ptrace(PTRACE_CONT, pid, None, None)
while alive:
    try:
        tid, status = os.waitpid(-1, WALL)
    except ChildProcessError:
        break
    if os.WIFEXITED(status) or os.WIFSIGNALED(status):
        alive.discard(tid)
        if tid == pid:
            code = os.waitstatus_to_exitcode(status)
        continue
    if not os.WIFSTOPPED(status):
        continue
    alive.add(tid)
    sig = os.WSTOPSIG(status)
    # Stops of our own (breakpoints, ptrace events, a new thread's SIGSTOP)
    # are swallowed; any other signal goes on to the process.
    deliver = 0 if sig in (signal.SIGTRAP, signal.SIGSTOP) else sig
    if sig == signal.SIGTRAP and (status >> 16) == 0:
        addr = (libc.ptrace(PTRACE_PEEKUSER, tid, ctypes.c_void_p(RIP), None) & (2**64 - 1)) - 1
        if addr in orig:
            os.pwrite(mem, orig.pop(addr), addr)
            name = funcs[addr - base]
            # Local symbols of one name at several addresses are one line.
            if name not in written:
                written.add(name)
                out.write(name + "\n")
        elif (addr - base) not in funcs or os.pread(mem, 1, addr) == b"\xcc":
            deliver = sig  # not one of ours: a real SIGTRAP
        # Ours (first hit, or another thread's hit of a breakpoint already
        # restored): rewind to run the original instruction.
        if deliver == 0:
            libc.ptrace(PTRACE_POKEUSER, tid, ctypes.c_void_p(RIP), ctypes.c_void_p(addr))
    libc.ptrace(PTRACE_CONT, tid, None, ctypes.c_void_p(deliver))
out.close()
print(f"trace-functions: {len(funcs) - len(orig)} functions run", file=sys.stderr)
sys.exit(code if code >= 0 else 128 - code)
