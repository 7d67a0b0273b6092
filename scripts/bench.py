#!/usr/bin/env python3
"""The benchmark driver behind scripts/bench (which installs the tools,
builds bladefs and starts the server): runs every workload on bladefs,
mountpoint-s3 (through bench/mountpoint-s3-driver), s3fs and rclone mount
against one S3 server in one run, and the raw limit
(the bladefs client with no file system: parallel ranged GETs and
multipart PUTs), then writes docs/BENCHMARKS.md and its chart.

Every cold run gets a fresh mount and a dropped page cache. Per run it
records wall time, the daemon's CPU seconds and peak RSS (from /proc), the
server's CPU seconds, and for bladefs its own request counters (from its
log: a SIGUSR1 snapshot after mounting, and the totals at unmount).
"""

import argparse
import copy
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLADEFS = ROOT / "target/release/bladefs"
S3CLI = ROOT / "target/release/bladefs-s3"
MOUNTPOINT = ROOT / "bench/mountpoint-s3-driver/target/release/mountpoint-s3-driver"
MIB = 1 << 20
GIB = 1 << 30
CLK = os.sysconf("SC_CLK_TCK")

TOOLS = ["bladefs", "mountpoint", "s3fs", "rclone", "rclone-writes"]
# Columns of the report, and the peers bladefs is compared with.
COLUMNS = TOOLS + ["raw"]
PEERS = ["raw", "mountpoint", "s3fs", "rclone"]


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def drop_caches():
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def proc_cpu(pid):
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK
    except (OSError, IndexError, ValueError):
        return 0.0


def proc_status_mib(pid, field):
    """A memory figure of /proc/PID/status (VmHWM, VmRSS) in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def proc_peak_rss_mib(pid):
    return proc_status_mib(pid, "VmHWM")


def proc_rss_mib(pid):
    return proc_status_mib(pid, "VmRSS")


def settled_rss_mib(pid, timeout=30):
    """The RSS once it has held still for a second (the kernel's FORGETs
    and the daemon's giving memory back take a moment)."""
    last, still, deadline = proc_rss_mib(pid), 0, time.time() + timeout
    while still < 4 and time.time() < deadline:
        time.sleep(0.25)
        now = proc_rss_mib(pid)
        still = still + 1 if abs(now - last) < 1 else 0
        last = now
    return last


def is_mounted(path):
    want = str(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split(" ")[4] == want for line in f)


def parse_requests(text):
    """The request table bladefs logs: {op: (requests, bytes_received)}."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"\s*(\w+)\s+requests\s+(\d+).*?received\s+(\d+)", line)
        if m:
            out[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return out


class Server:
    def __init__(self, endpoint, key, secret, pids, work):
        self.endpoint, self.key, self.secret = endpoint, key, secret
        self.pids = [int(p) for p in pids.split()] if pids else []
        self.creds = work / "credentials"
        self.creds.write_text(
            f"[default]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"
        )
        self.creds.chmod(0o600)
        self.passwd = work / "s3fs.passwd"
        self.passwd.write_text(f"{key}:{secret}\n")
        self.passwd.chmod(0o600)
        self.rclone_conf = work / "rclone.conf"
        self.rclone_conf.write_text("")
        # mountpoint-s3 sends CRC32C checksums with uploads by default;
        # servers that refuse them (Ceph RGW 16) need them off to be written.
        self.mountpoint_opts = []

    def cpu(self):
        return sum(proc_cpu(p) for p in self.pids)

    def s3(self, *args, capture=False):
        cmd = [str(S3CLI), "--endpoint", self.endpoint, "--credentials-file", str(self.creds), *args]
        if capture:
            return subprocess.run(cmd, check=True, capture_output=True, text=True)
        return run(cmd, stdout=subprocess.DEVNULL)


class Mount:
    """One tool mounted in the foreground, watched through /proc."""

    def __init__(self, tool, server, bucket, work, extra=()):
        self.tool, self.server = tool, server
        self.path = Path(tempfile.mkdtemp(dir=work, prefix=f"mnt-{tool}-"))
        self.log = self.path.with_suffix(".log")
        env = dict(os.environ)
        if tool == "bladefs":
            cmd = [str(BLADEFS), bucket, str(self.path), "--foreground",
                   "--endpoint", server.endpoint, "--credentials-file", str(server.creds),
                   "--log-file", str(self.log), *extra]
        elif tool == "mountpoint":
            cmd = [str(MOUNTPOINT), bucket, str(self.path), "--endpoint", server.endpoint,
                   *server.mountpoint_opts, *extra]
            env.update(AWS_ACCESS_KEY_ID=server.key, AWS_SECRET_ACCESS_KEY=server.secret,
                       AWS_EC2_METADATA_DISABLED="true")
        elif tool == "s3fs":
            cmd = ["s3fs", bucket, str(self.path), "-f", "-o",
                   f"url={server.endpoint},use_path_request_style,sigv4,listobjectsv2,"
                   f"endpoint=us-east-1,passwd_file={server.passwd}"]
        else:
            mode = "writes" if tool == "rclone-writes" else "off"
            remote = (f":s3,provider=Other,access_key_id={server.key},"
                      f"secret_access_key={server.secret},endpoint='{server.endpoint}',"
                      f"force_path_style=true,list_version=2:{bucket}")
            cmd = ["rclone", "mount", remote, str(self.path), "--config", str(server.rclone_conf),
                   "--vfs-cache-mode", mode, "--cache-dir", str(work / f"rclone-cache-{self.path.name}")]
            # rclone fails when this is set here.
            env.pop("AWS_CA_BUNDLE", None)
        err = open(self.log.with_suffix(".err"), "w")
        # mountpoint-s3 logs to standard output.
        out = err if tool == "mountpoint" else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        deadline = time.time() + 60
        while not is_mounted(self.path):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{tool} exited before mounting: {self.log.with_suffix('.err').read_text()[-2000:]}")
            if time.time() > deadline:
                raise RuntimeError(f"{tool} did not mount in 60 s")
            time.sleep(0.01)
        self.cpu0 = proc_cpu(self.proc.pid)
        self.server_cpu0 = server.cpu()
        self.before = {}
        if tool == "bladefs":
            self.before = self.snapshot()

    def snapshot(self):
        """bladefs's counters now (SIGUSR1 makes it log them)."""
        n = self.log.read_text().count("stats: inodes") if self.log.exists() else 0
        self.proc.send_signal(10)
        deadline = time.time() + 10
        while time.time() < deadline:
            text = self.log.read_text() if self.log.exists() else ""
            if text.count("stats: inodes") > n and "total" in text.rsplit("stats: inodes", 1)[1]:
                return parse_requests(text.rsplit("stats: inodes", 1)[1])
            time.sleep(0.01)
        return {}

    def stop(self):
        """Unmounts; returns what the daemon cost while mounted."""
        cpu = proc_cpu(self.proc.pid) - self.cpu0
        rss = proc_peak_rss_mib(self.proc.pid)
        server_cpu = self.server.cpu() - self.server_cpu0
        run(["fusermount3", "-u", str(self.path)])
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        out = {"daemon_cpu_s": cpu, "peak_rss_mib": rss, "server_cpu_s": server_cpu}
        if self.tool == "bladefs":
            text = self.log.read_text()
            after = parse_requests(text.rsplit("unmounted; requests:", 1)[-1])
            reqs = {op: after[op][0] - self.before.get(op, (0, 0))[0] for op in after}
            got = {op: after[op][1] - self.before.get(op, (0, 0))[1] for op in after}
            out["requests"] = {op: n for op, n in reqs.items() if n and op != "total"}
            out["bytes_fetched"] = got.get("GetObject", 0)
        try:
            self.path.rmdir()
        except OSError:
            pass
        return out


def timed(cmd, **kw):
    t = time.perf_counter()
    run(cmd, **kw)
    return time.perf_counter() - t


def fio(args, cwd=None):
    out = subprocess.run(["fio", "--output-format=json", *args], check=True,
                         capture_output=True, text=True, cwd=cwd).stdout
    # fio may print warnings before the JSON.
    return json.loads(out[out.index("{"):])


class Bench:
    def __init__(self, args, server, work):
        self.args, self.server, self.work = args, server, work
        self.bucket = "bench"
        self.results = {}  # workload -> tool -> [run dict]

    def record(self, workload, tool, value, extra=None):
        run_ = {"value": value, **(extra or {})}
        self.results.setdefault(workload, {}).setdefault(tool, []).append(run_)
        log(f"{workload:<22} {tool:<14} {value:10.3f} {json.dumps({k: v for k, v in run_.items() if k != 'value'})[:200]}")

    def forget(self, key):
        """Deletes an object a workload wrote: a server holding its data in
        memory (the Ceph RGW of --server rgw) would otherwise fill up."""
        try:
            self.server.s3("rm", f"{self.bucket}/{key}")
        except subprocess.CalledProcessError as e:
            log(f"could not delete {key}: {e}")

    def fresh_random(self, path, size):
        with open("/dev/urandom", "rb") as src, open(path, "wb") as dst:
            left = size
            while left:
                chunk = src.read(min(left, 8 * MIB))
                dst.write(chunk)
                left -= len(chunk)

    # --- seeding -------------------------------------------------------

    def seed(self, workloads):
        """Puts what the chosen workloads read, through the S3 API."""
        s = self.server
        try:
            s.s3("mb", self.bucket)
        except subprocess.CalledProcessError:
            pass
        if {"seqread", "randread", "ttfb", "data_cache"} & set(workloads):
            big = self.work / "seed-1g"
            self.fresh_random(big, GIB)
            s.s3("put", str(big), f"{self.bucket}/big1g")
            big.unlink()
            tiny = self.work / "tiny"
            tiny.write_bytes(b"x")
            s.s3("put", str(tiny), f"{self.bucket}/tiny")
        if "listing" in workloads:
            s.s3("fill", f"{self.bucket}/ls1k", "--count", "1000", "--size", "100")
            s.s3("fill", f"{self.bucket}/ls10k", "--count", "10000", "--size", "100")
            s.s3("fill", f"{self.bucket}/tree", "--count", "10000", "--size", "100", "--dirs", "100")
        if "big_walk" in workloads:
            n = self.args.walk_objects
            have = s.s3("ls", f"{self.bucket}/million/d{999 % max(1, n // 1000):03}/",
                        capture=True).stdout.count("\n")
            if have < max(1, n // 1000):
                log(f"seeding {n} empty objects in {max(1, n // 1000)} directories (minutes)")
                s.s3("fill", f"{self.bucket}/million", "--count", str(n), "--size", "0",
                     "--dirs", str(max(1, n // 1000)), "--jobs", "64")
        if "tree_walk" in workloads:
            n = self.args.tree_files
            s.s3("fill", f"{self.bucket}/walk", "--count", str(n), "--size", "4096",
                 "--dirs", str(max(1, n // 50)), "--jobs", "32")
        self.small_src = self.work / "small-src"
        self.small_src.mkdir(exist_ok=True)
        for i in range(1000):
            (self.small_src / f"f{i:04}").write_bytes(os.urandom(4096))

    # --- workloads -----------------------------------------------------

    def cold_mount(self, tool, extra=()):
        drop_caches()
        if tool == "bladefs":
            extra = (*self.args.bladefs_args.split(), *extra)
        return Mount(tool, self.server, self.bucket, self.work, extra)

    def seqread(self, tool):
        for bs, jobs, name in [("1M", 1, "seqread 1x1M"), ("256k", 1, "seqread 1x256k"), ("1M", 4, "seqread 4x1M")]:
            for _ in range(self.args.reps):
                m = self.cold_mount(tool)
                f = m.path / "big1g"
                args = ["--name=r", f"--filename={f}", "--rw=read", f"--bs={bs}", "--readonly",
                        "--ioengine=psync", f"--numjobs={jobs}", "--group_reporting"]
                if jobs > 1:
                    args += [f"--size={GIB // jobs}", f"--offset_increment={GIB // jobs}"]
                else:
                    args += [f"--size={GIB}"]
                t = time.perf_counter()
                fio(args)
                secs = time.perf_counter() - t
                self.record(name, tool, GIB / MIB / secs, m.stop())

    def seqread_raw(self):
        for _ in range(self.args.reps):
            drop_caches()
            cpu0 = self.server.cpu()
            secs = timed([str(S3CLI), "--endpoint", self.server.endpoint, "--credentials-file",
                          str(self.server.creds), "get", f"{self.bucket}/big1g", "/dev/null"],
                         stdout=subprocess.DEVNULL)
            extra = {"server_cpu_s": self.server.cpu() - cpu0}
            for name in ["seqread 1x1M", "seqread 1x256k", "seqread 4x1M"]:
                self.record(name, "raw", GIB / MIB / secs, extra)

    def write_source(self):
        """Where the written workloads' 1 GiB source lives: in memory, as
        the fresh mount drops the page cache and a source read from disk
        would measure the disk too. Removed by the caller, failed or not."""
        shm = Path("/dev/shm")
        return (shm if shm.is_dir() else self.work) / f"bladefs-bench-write-src-{os.getpid()}"

    def seqwrite(self, tool):
        src = self.write_source()
        try:
            self.seqwrite_runs(tool, src)
        finally:
            src.unlink(missing_ok=True)

    def seqwrite_runs(self, tool, src):
        for rep in range(self.args.reps):
            m = self.cold_mount(tool)
            t = time.perf_counter()
            fio(["--name=w", f"--filename={m.path / f'fio-{rep}'}", "--rw=write", "--bs=1M",
                 f"--size={GIB}", "--ioengine=psync", "--fsync_on_close=1", "--refill_buffers"])
            secs = time.perf_counter() - t
            self.record("seqwrite fio", tool, GIB / MIB / secs, m.stop())
            self.forget(f"fio-{rep}")
            # Fresh bytes each time: Garage stores blocks by hash, so a
            # repeated content would not be written again.
            self.fresh_random(src, GIB)
            m = self.cold_mount(tool)
            secs = timed(["dd", f"if={src}", f"of={m.path / f'dd-{rep}'}", "bs=1M"],
                         stderr=subprocess.DEVNULL)
            self.record("seqwrite dd", tool, GIB / MIB / secs, m.stop())
            self.forget(f"dd-{rep}")

    def seqwrite_raw(self):
        src = self.write_source()
        try:
            self.seqwrite_raw_runs(src)
        finally:
            src.unlink(missing_ok=True)

    def seqwrite_raw_runs(self, src):
        for rep in range(self.args.reps):
            self.fresh_random(src, GIB)
            cpu0 = self.server.cpu()
            secs = timed([str(S3CLI), "--endpoint", self.server.endpoint, "--credentials-file",
                          str(self.server.creds), "put", str(src), f"{self.bucket}/raw-{rep}"],
                         stdout=subprocess.DEVNULL)
            extra = {"server_cpu_s": self.server.cpu() - cpu0}
            self.record("seqwrite fio", "raw", GIB / MIB / secs, extra)
            self.record("seqwrite dd", "raw", GIB / MIB / secs, extra)
            self.forget(f"raw-{rep}")

    def randread(self, tool):
        for bs in ["4k", "256k"]:
            for _ in range(self.args.reps):
                self.random_reads(f"randread {bs} IOPS", tool, bs)

    def random_reads(self, name, tool, bs, opts=()):
        """One fio job of random reads of the 1 GiB object on a fresh mount."""
        m = self.cold_mount(tool, opts)
        r = fio(["--name=rr", f"--filename={m.path / 'big1g'}", "--rw=randread", f"--bs={bs}",
                 "--readonly", f"--size={GIB}", "--ioengine=psync", "--time_based",
                 f"--runtime={self.args.random_seconds}", "--randrepeat=0"])
        job = r["jobs"][0]["read"]
        pct = job["clat_ns"]["percentile"]
        extra = m.stop()
        extra.update({"p50_ms": pct["50.000000"] / 1e6, "p99_ms": pct["99.000000"] / 1e6,
                      "bytes_read": job["io_bytes"]})
        self.record(name, tool, job["iops"], extra)

    def ttfb(self, tool):
        for name, key in [("ttfb 1 GiB object ms", "big1g"), ("ttfb 1-byte object ms", "tiny")]:
            for _ in range(self.args.reps):
                m = self.cold_mount(tool)
                t = time.perf_counter()
                with open(m.path / key, "rb") as f:
                    f.read(1)
                ms = (time.perf_counter() - t) * 1000
                self.record(name, tool, ms, m.stop())

    def listing(self, tool):
        for name, cmd in [("ls -l 1000 s", ["ls", "-l", "ls1k"]),
                          ("ls -l 10000 s", ["ls", "-l", "ls10k"]),
                          ("find 10000 in 100 dirs s", ["find", "tree"])]:
            for _ in range(self.args.reps):
                m = self.cold_mount(tool)
                secs = timed(cmd, cwd=m.path, stdout=subprocess.DEVNULL)
                self.record(name, tool, secs, m.stop())

    def small_files(self, tool):
        for rep in range(self.args.reps):
            dst = f"cp-{tool}-{rep}"
            m = self.cold_mount(tool)
            secs = timed(["cp", "-r", str(self.small_src), str(m.path / dst)])
            self.record("cp -r 1000x4KiB in s", tool, secs, m.stop())
            out = self.work / f"out-{tool}-{rep}"
            m = self.cold_mount(tool)
            secs = timed(["cp", "-r", str(m.path / dst), str(out)])
            self.record("cp -r 1000x4KiB out s", tool, secs, m.stop())
            run(["diff", "-r", str(self.small_src), str(out)], stdout=subprocess.DEVNULL)
            shutil.rmtree(out)
            m = self.cold_mount(tool)
            t = time.perf_counter()
            rm = subprocess.run(["rm", "-r", str(m.path / dst)], capture_output=True, text=True)
            secs = time.perf_counter() - t
            cost = m.stop()
            if rm.returncode == 0:
                self.record("rm -r 1000 files s", tool, secs, cost)
            else:
                # mountpoint-s3 removes files but not directories it did not
                # make: a result, and the next runs still measure cp.
                self.record("rm -r 1000 files (failed)", tool, 0, {"error": rm.stderr.strip()[-300:]})

    def small_writes(self, tool):
        """Small files written through a link with DELAY_MS of latency each
        way (scripts/lib/delay_proxy.py in front of the server): cp -r of
        1000 x 4 KiB and tar x of a tree (--tree-files files of 4 KiB, 50
        per directory), without and with --write-back. The time is until
        the command returns; with write-back the unmount then waits for
        the queue to be stored, and that time is recorded beside it. Each
        result is checked through a fresh mount."""
        if tool != "bladefs":
            return
        n = self.args.tree_files
        tree = self.work / "tree.tar"
        if not tree.exists():
            src = self.work / "tree-src"
            for i in range(n):
                d = src / f"d{i // 50:04}"
                d.mkdir(parents=True, exist_ok=True)
                (d / f"f{i:05}").write_bytes(os.urandom(4096))
            run(["tar", "cf", str(tree), "-C", str(src), "."])
            shutil.rmtree(src)
        proxy = subprocess.Popen([sys.executable, str(ROOT / "scripts/lib/delay_proxy.py"), "0",
                                  self.server.endpoint.split("//", 1)[1], str(DELAY_MS)],
                                 stdout=subprocess.PIPE, text=True)
        try:
            port = int(proxy.stdout.readline().split()[1])
            slow = copy.copy(self.server)
            slow.endpoint = f"http://127.0.0.1:{port}"
            for rep in range(self.args.reps):
                for mode, opts in [("", []), (" write-back", ["--write-back", str(self.work / "journal")])]:
                    label = f"at {DELAY_MS:g} ms{mode}"
                    drop_caches()
                    extra = (*self.args.bladefs_args.split(), *opts)
                    m = Mount(tool, slow, self.bucket, self.work, extra)
                    dst = f"wcp{rep}{mode.strip()}"
                    secs = timed(["cp", "-r", str(self.small_src), str(m.path / dst)])
                    t = time.perf_counter()
                    cost = m.stop()
                    cost["stored_after_s"] = secs + time.perf_counter() - t
                    self.record(f"cp -r 1000x4KiB in {label} s", tool, secs, cost)
                    check = self.cold_mount(tool)
                    run(["diff", "-r", str(self.small_src), str(check.path / dst)], stdout=subprocess.DEVNULL)
                    check.stop()
                    m = Mount(tool, slow, self.bucket, self.work, extra)
                    dst = f"wtar{rep}{mode.strip()}"
                    (m.path / dst).mkdir()
                    secs = timed(["tar", "xf", str(tree), "-C", str(m.path / dst)])
                    t = time.perf_counter()
                    cost = m.stop()
                    cost["stored_after_s"] = secs + time.perf_counter() - t
                    self.record(f"tar x {n} files in {label} s", tool, secs, cost)
                    check = self.cold_mount(tool)
                    files = sum(len(f) for _, _, f in os.walk(check.path / dst))
                    check.stop()
                    if files != n:
                        raise RuntimeError(f"tar x{mode}: {files} of {n} files stored")
        finally:
            proxy.kill()
            proxy.wait()

    def tree_walk(self, tool):
        """Reading a tree of small files (50 per directory) with tools that
        walk it: tar c (every byte read), then diff -r against a local copy."""
        n = self.args.tree_files
        local = self.work / "walk-local"
        for rep_ in range(self.args.reps):
            m = self.cold_mount(tool)
            secs = timed(["sh", "-c", "tar cf - walk | cat > /dev/null"], cwd=m.path)
            self.record(f"tar c {n} files s", tool, secs, m.stop())
            if not local.exists():
                m = self.cold_mount(tool)
                run(["cp", "-r", str(m.path / "walk"), str(local)])
                m.stop()
            m = self.cold_mount(tool)
            secs = timed(["diff", "-r", "walk", str(local)], cwd=m.path, stdout=subprocess.DEVNULL)
            self.record(f"diff -r {n} files s", tool, secs, m.stop())

    def big_walk(self, tool):
        """A bucket of --walk-objects empty objects (a million by default)
        in directories of 1000: find, then ls -lR, each on a fresh mount;
        the daemon's resident memory after find, and again once the kernel
        has forgotten every inode (echo 2 > drop_caches, then until the
        RSS holds still)."""
        n = self.args.walk_objects
        for _ in range(self.args.reps):
            m = self.cold_mount(tool)
            t = time.perf_counter()
            out = subprocess.run(["find", "million"], cwd=m.path, check=True,
                                 capture_output=True).stdout
            secs = time.perf_counter() - t
            found = out.count(b"\n")
            if found < n:
                raise RuntimeError(f"find saw {found} names of {n}")
            after_walk = proc_rss_mib(m.proc.pid)
            os.sync()
            Path("/proc/sys/vm/drop_caches").write_text("2\n")
            forgot = settled_rss_mib(m.proc.pid)
            cost = m.stop()
            cost.update(rss_after_walk_mib=after_walk, rss_after_forget_mib=forgot)
            self.record(f"find {n} in {n // 1000} dirs s", tool, secs, cost)
            self.record(f"RSS after find of {n} MiB", tool, after_walk)
            self.record(f"RSS after the kernel forgot {n} MiB", tool, forgot)
            m = self.cold_mount(tool)
            secs = timed(["ls", "-lR", "million"], cwd=m.path, stdout=subprocess.DEVNULL)
            self.record(f"ls -lR {n} s", tool, secs, m.stop())

    def data_cache(self, tool):
        """A local data cache (bladefs --data-cache, mountpoint-s3 --cache):
        a first mount reads the 1 GiB object (filling the cache), then fresh
        mounts (page cache dropped, so the cache's files come from disk) read
        it again sequentially and at random, 4 KiB at a time."""
        cache = self.work / "data-cache"
        if tool == "mountpoint":
            opts = ["--cache", str(cache)]
        else:
            opts = ["--data-cache", str(cache), "--data-cache-size", "2G"]
        m = self.cold_mount(tool, opts)
        secs = timed(["dd", f"if={m.path / 'big1g'}", "of=/dev/null", "bs=1M"],
                     stderr=subprocess.DEVNULL)
        self.record("seqread filling the data cache", tool, GIB / MIB / secs, m.stop())
        for _ in range(self.args.reps):
            m = self.cold_mount(tool, opts)
            secs = timed(["dd", f"if={m.path / 'big1g'}", "of=/dev/null", "bs=1M"],
                         stderr=subprocess.DEVNULL)
            self.record("seqread again, data cache", tool, GIB / MIB / secs, m.stop())
            self.random_reads("randread 4k IOPS, data cache", tool, "4k", opts)
        shutil.rmtree(cache, ignore_errors=True)

    def big_write_rss(self):
        """Peak RSS of bladefs writing 5 GiB with default options."""
        m = self.cold_mount("bladefs")
        t = time.perf_counter()
        fio(["--name=w5", f"--filename={m.path / 'five-gib'}", "--rw=write", "--bs=1M",
             f"--size={5 * GIB}", "--ioengine=psync", "--fsync_on_close=1", "--refill_buffers"])
        secs = time.perf_counter() - t
        self.record("seqwrite 5 GiB fio", "bladefs", 5 * GIB / MIB / secs, m.stop())
        self.forget("five-gib")


# Runs that would not measure what the others do.
SKIP = {
    ("small_files", "rclone-writes"): "close returns before the upload, which a fresh mount then misses",
    ("data_cache", "s3fs"): "no block cache on local disk",
    ("data_cache", "rclone"): "no block cache on local disk",
    ("data_cache", "rclone-writes"): "no block cache on local disk",
}

WORKLOADS = ["seqread", "seqwrite", "randread", "ttfb", "listing", "small_files", "tree_walk",
             "data_cache", "big_write_rss", "small_writes"]
# Not run unless named: seeding a million objects takes about ten minutes.
EXTRA_WORKLOADS = ["big_walk"]
# Latency added each way by the small_writes workload's proxy.
DELAY_MS = 2


def median_of(runs, key="value"):
    vals = [r[key] for r in runs if key in r]
    return statistics.median(vals) if vals else None


def fmt(v, digits=1):
    if v is None:
        return "—"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.{digits}f}" if abs(v) >= 1 else f"{v:.3f}"


HIGHER_IS_BETTER = lambda name: ("seq" in name) or ("IOPS" in name)


def report(results, args, server_desc, elapsed):
    lines = []
    tools = COLUMNS
    run_at = time.gmtime(Path(args.json).stat().st_mtime) if Path(args.json).exists() else time.gmtime()
    lines.append(f"Run of {time.strftime('%Y-%m-%d %H:%M UTC', run_at)}"
                 + (f", {elapsed / 60:.0f} min" if elapsed else "") + "; "
                 f"server: {server_desc}; {args.reps} runs each, median (min–max).\n")
    lines.append(f"Machine: {platform.node()}, {os.cpu_count()} cores, "
                 f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / GIB:.0f} GiB, "
                 f"kernel {platform.release()}.\n")
    lines.append("| workload | " + " | ".join(tools) + " | "
                 + " | ".join(f"bladefs / {o}" for o in PEERS) + " |")
    lines.append("|---|" + "---|" * (len(tools) + len(PEERS)))
    for name, by_tool in results.items():
        cells = []
        med = {}
        for t in tools:
            runs = by_tool.get(t)
            if not runs:
                cells.append("")
                continue
            vals = [r["value"] for r in runs]
            med[t] = statistics.median(vals)
            cells.append(f"{fmt(med[t])} ({fmt(min(vals))}–{fmt(max(vals))})")

        def ratio(a, b):
            if a not in med or b not in med or not med[a] or not med[b]:
                return ""
            r = med[a] / med[b] if HIGHER_IS_BETTER(name) else med[b] / med[a]
            return f"{r:.2f}×"
        lines.append(f"| {name} | " + " | ".join(cells) + " | "
                     + " | ".join(ratio("bladefs", o) for o in PEERS) + " |")
    lines.append("\nThroughput in MiB/s, times in seconds or ms as named, IOPS as counted by fio; ratios are "
                 "bladefs's speed over the other's (above 1: bladefs faster).\n")

    lines.append("| workload | tool | daemon CPU s | server CPU s | peak RSS MiB | bladefs requests | fetched / read |")
    lines.append("|---|---|---|---|---|---|---|")
    for name, by_tool in results.items():
        for t in tools:
            runs = by_tool.get(t)
            if not runs:
                continue
            reqs = ""
            if t == "bladefs" and runs[0].get("requests") is not None:
                last = runs[len(runs) // 2]["requests"]
                reqs = ", ".join(f"{op} {n}" for op, n in sorted(last.items(), key=lambda x: -x[1]))
            amp = ""
            if "bytes_read" in runs[0] and "bytes_fetched" in runs[0]:
                amp = f"{statistics.median(r['bytes_fetched'] / max(r['bytes_read'], 1) for r in runs):.2f}"
            lines.append(f"| {name} | {t} | {fmt(median_of(runs, 'daemon_cpu_s'))} | {fmt(median_of(runs, 'server_cpu_s'))} "
                         f"| {fmt(median_of(runs, 'peak_rss_mib'))} | {reqs} | {amp} |")
    lines.append("")
    lines.append("Random reads (fio psync, one job): p50 / p99 completion latency in ms.\n")
    lines.append("| workload | " + " | ".join(TOOLS) + " |")
    lines.append("|---|" + "---|" * len(TOOLS))
    for name, by_tool in results.items():
        if "randread" not in name:
            continue
        cells = []
        for t in TOOLS:
            runs = by_tool.get(t)
            cells.append(f"{fmt(median_of(runs, 'p50_ms'), 2)} / {fmt(median_of(runs, 'p99_ms'), 2)}" if runs else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def targets(results):
    def med(name, tool, key="value"):
        runs = results.get(name, {}).get(tool)
        return median_of(runs, key) if runs else None

    out = []

    def check(label, ok, detail):
        out.append(f"- {'met' if ok else 'NOT met'}: {label} — {detail}")

    r = med("seqread 1x1M", "bladefs")
    for other, want in [("raw", 0.9), ("mountpoint", 1.0), ("s3fs", 2.0), ("rclone", 3.0)]:
        o = med("seqread 1x1M", other)
        if r and o:
            check(f"sequential read ≥ {want} × {other}", r / o >= want, f"{r / o:.2f}×")
    w = med("seqwrite fio", "bladefs")
    for other, want in [("raw", 0.85), ("s3fs", 2.0)]:
        o = med("seqwrite fio", other)
        if w and o:
            check(f"sequential write ≥ {want} × {other}", w / o >= want, f"{w / o:.2f}×")
    runs = results.get("ls -l 10000 s", {}).get("bladefs")
    if runs:
        n = statistics.median(sum(r["requests"].values()) for r in runs)
        check("ls -l of 10 000 objects in ≤ 12 requests", n <= 12, f"{n:.0f} requests")
        s = med("ls -l 10000 s", "s3fs")
        b = med("ls -l 10000 s", "bladefs")
        if s and b:
            check("ls -l of 10 000 objects ≥ 10 × faster than s3fs", s / b >= 10, f"{s / b:.1f}×")
    for name in [n for n in results if n.startswith("diff -r ") or n.startswith("tar c ")]:
        s, b = med(name, "s3fs"), med(name, "bladefs")
        if s and b:
            check(f"{name.rsplit(' s', 1)[0]} ≥ 5 × faster than s3fs", s / b >= 5, f"{s / b:.1f}×")
    s, b = med("cp -r 1000x4KiB in s", "s3fs"), med("cp -r 1000x4KiB in s", "bladefs")
    if s and b:
        check("cp -r of 1000 small files ≥ 3 × faster than s3fs", s / b >= 3, f"{s / b:.1f}×")
    runs = results.get("randread 4k IOPS", {}).get("bladefs")
    if runs:
        amp = statistics.median(r["bytes_fetched"] / max(r["bytes_read"], 1) for r in runs)
        check("random 4 KiB reads fetch ≤ 4 × the bytes asked for", amp <= 4, f"{amp:.2f}×")
    rss = med("seqread 1x1M", "bladefs", "peak_rss_mib")
    if rss is not None:
        check("peak RSS ≤ 300 MiB during the 1 GiB sequential read", rss <= 300, f"{rss:.0f} MiB")
    rss = med("seqwrite 5 GiB fio", "bladefs", "peak_rss_mib")
    if rss is not None:
        check("peak RSS ≤ 512 MiB during a 5 GiB sequential write", rss <= 512, f"{rss:.0f} MiB")
    return "\n".join(out) + "\n"


def chart(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib missing: no chart")
        return False
    tools = COLUMNS
    colors = {"bladefs": "#1f77b4", "mountpoint": "#9467bd", "s3fs": "#ff7f0e", "rclone": "#2ca02c", "rclone-writes": "#98df8a", "raw": "#7f7f7f"}
    tput = [n for n in results if n.startswith("seq") and "5 GiB" not in n and "failed" not in n]
    times = [n for n in results if n.endswith(" s")]
    fig, axes = plt.subplots(1, 3, figsize=(21, 5.5))
    for ax, names, title, ylabel, logy in [
        (axes[0], tput, "Throughput (higher is better)", "MiB/s", False),
        (axes[1], times, "Time (lower is better)", "seconds (log)", True),
    ]:
        width = 0.8 / len(tools)
        for i, t in enumerate(tools):
            xs, ys = [], []
            for j, n in enumerate(names):
                m = median_of(results[n].get(t, []))
                if m is not None:
                    xs.append(j + i * width)
                    ys.append(m)
            ax.bar(xs, ys, width, label=t, color=colors[t])
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))])
        ax.set_xticklabels([n.replace(" s", "") for n in names], rotation=20, ha="right", fontsize=8)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        if logy:
            ax.set_yscale("log")
        ax.legend(fontsize=8)
    # bladefs's speed over each other's, per workload (above 1: faster).
    ax = axes[2]
    names = [n for n in results if "failed" not in n and "5 GiB" not in n]
    others = PEERS
    width = 0.8 / len(others)
    for i, o in enumerate(others):
        xs, ys = [], []
        for j, n in enumerate(names):
            b, x = median_of(results[n].get("bladefs", [])), median_of(results[n].get(o, []))
            if b and x:
                xs.append(j + i * width)
                ys.append(b / x if HIGHER_IS_BETTER(n) else x / b)
        ax.bar(xs, ys, width, label=f"bladefs / {o}", color=colors[o])
    ax.axhline(1, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))])
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
    ax.set_title("Ratios (above 1: bladefs faster)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return True


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--bladefs-args", default="",
                   help="extra options of every bladefs mount, e.g. '--checksum-crc32c'")
    p.add_argument("--tools", default=",".join(TOOLS))
    p.add_argument("--workloads", default=None,
                   help=f"default: {','.join(WORKLOADS)}; also {','.join(EXTRA_WORKLOADS)}")
    p.add_argument("--random-seconds", type=int, default=10)
    p.add_argument("--tree-files", type=int, default=15000,
                   help="files of the tree_walk workload (50 per directory)")
    p.add_argument("--walk-objects", type=int, default=1_000_000,
                   help="objects of the big_walk workload (1000 per directory)")
    p.add_argument("--server-desc", default="Garage, 1 node, 127.0.0.1")
    p.add_argument("--section", default="garage",
                   help="which server's section of the doc to write (garage, rgw, ...)")
    p.add_argument("--doc", default=str(ROOT / "docs/BENCHMARKS.md"))
    p.add_argument("--json", default=str(ROOT / "target/bench/results.json"))
    p.add_argument("--from-json", help="only write the report and chart from a results file")
    args = p.parse_args()
    if args.from_json:
        args.json = args.from_json
        results = json.loads(Path(args.from_json).read_text())
        write_doc(results, args, args.server_desc, 0)
        return
    work = Path(os.environ.get("BENCH_WORK") or tempfile.mkdtemp(prefix="bladefs-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    server = Server(os.environ["BENCH_ENDPOINT"], os.environ["BENCH_KEY"], os.environ["BENCH_SECRET"],
                    os.environ.get("BENCH_SERVER_PIDS", ""), work)
    tools = [t for t in args.tools.split(",") if t]
    if args.workloads is None:
        args.workloads = ",".join(WORKLOADS)
    workloads = [w for w in args.workloads.split(",") if w]
    if args.section != "garage":
        server.mountpoint_opts = ["--no-upload-checksums"]
    bench = Bench(args, server, work)
    start = time.time()
    log("seeding the bucket")
    bench.seed(workloads)
    for w in workloads:
        if w == "big_write_rss":
            if "bladefs" in tools:
                bench.big_write_rss()
            continue
        for t in tools:
            if (w, t) in SKIP:
                log(f"{w} on {t}: skipped ({SKIP[(w, t)]})")
                continue
            log(f"{w} on {t}")
            try:
                getattr(bench, w)(t)
            except Exception as e:  # a peer failing a workload is a result, not the end
                log(f"{w} on {t} failed: {e}")
                for m in Path(work).glob("mnt-*"):
                    subprocess.run(["fusermount3", "-u", "-z", str(m)], stderr=subprocess.DEVNULL)
                bench.results.setdefault(f"{w} (failed)", {}).setdefault(t, []).append({"value": 0, "error": str(e)[:300]})
        if w in ("seqread", "seqwrite"):
            getattr(bench, f"{w}_raw")()
    elapsed = time.time() - start
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(bench.results, indent=1))
    write_doc(bench.results, args, args.server_desc, elapsed)
    shutil.rmtree(work, ignore_errors=True)


def write_doc(results, args, server_desc, elapsed):
    """Replaces the doc's section of this server (--section), between its
    markers, or adds one at the end: each server keeps its own results."""
    table = report(results, args, server_desc, elapsed)
    verdict = targets(results)
    doc = Path(args.doc)
    png = doc.parent / f"benchmarks-{args.section}.png"
    has_chart = chart(results, png)
    open_, close = f"<!-- bench:begin:{args.section}", f"<!-- bench:end:{args.section} -->\n"
    generated = (f"{open_} (written by scripts/bench; edit outside these markers) -->\n"
                 f"### {server_desc}\n\n{table}\n#### Targets\n\n{verdict}\n"
                 + (f"![throughput and times]({png.name})\n" if has_chart else "")
                 + close)
    text = doc.read_text() if doc.exists() else "# Benchmarks\n\n"
    if open_ in text:
        begin, end = text.index(open_), text.index(close) + len(close)
        text = text[:begin] + generated + text[end:]
    else:
        text = text.rstrip("\n") + "\n\n" + generated
    doc.write_text(text)
    print(table)
    print(verdict)


if __name__ == "__main__":
    main()
