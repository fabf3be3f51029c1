/**
 * Do file-system work in a user's home with that user's rights, in this process.
 *
 * When we run as root for user U, every path-based operation in U's home (lstat, open, mkdir, link, rename,
 * the lock file) goes through `withUserCreds(U, fn)`: the effective gid, the supplementary groups
 * (initgroups, as a login would get them) and the effective uid become U's for the duration of `fn`, then
 * root's again. The kernel then checks every step against U: a symlink or a directory U planted can only
 * lead where U can write anyway, and nothing created there is owned by root. The real and saved uids stay
 * 0, so U can neither signal nor ptrace us meanwhile (the kernel also marks the process non-dumpable when
 * the effective uid changes).
 *
 * Linux credentials are per thread; glibc's seteuid/setegid/setgroups change them for every thread of the
 * process (libuv's pool threads included). `fn` must be synchronous, so no callback, timer or other I/O of
 * this process runs while the credentials are U's; an `fn` that returns a promise is a bug and throws.
 *
 * When we are not root, or U is root, or U is who we already are, `fn` runs unchanged: the kernel already
 * checks what we do against our own rights.
 */

export interface Creds {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
}

let switched: Creds | null = null;

/** Do we switch credentials to act for `who`? (root acting for someone else) */
export function switchesFor(who: Creds): boolean {
  const euid = process.geteuid?.() ?? -1;
  return euid === 0 && who.uid !== 0;
}

export function withUserCreds<T>(who: Creds, fn: () => T): T {
  if (switched !== null) {
    if (switched.uid !== who.uid) throw new Error(`withUserCreds: already acting as uid ${switched.uid}`);
    return guardSync(fn());
  }
  if (!switchesFor(who)) return guardSync(fn());
  const egid = process.getegid!();
  const groups = process.getgroups!();
  try {
    // initgroups(3) is in Node on POSIX, but not in @types/node.
    const initgroups = (process as unknown as { initgroups?: (user: string, gid: number) => void })
      .initgroups;
    if (!initgroups) throw new Error("no initgroups");
    initgroups(who.name, who.gid);
  } catch {
    process.setgroups!([who.gid]); // no passwd entry for the name: only the primary group
  }
  try {
    process.setegid!(who.gid);
    process.seteuid!(who.uid);
  } catch (e) {
    restore(egid, groups);
    throw e;
  }
  switched = who;
  let result: T;
  try {
    result = fn();
  } finally {
    switched = null;
    restore(egid, groups);
  }
  return guardSync(result);
}

function restore(egid: number, groups: number[]): void {
  process.seteuid!(0); // first: the others need root again
  process.setegid!(egid);
  process.setgroups!(groups);
}

function guardSync<T>(v: T): T {
  if (v !== null && typeof v === "object" && typeof (v as { then?: unknown }).then === "function")
    throw new Error("withUserCreds: the function must be synchronous");
  return v;
}
