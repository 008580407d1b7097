/**
 * The parts of the Origin Private File System API Mycelite uses, typed here because TypeScript's DOM
 * library leaves out what only dedicated workers have (FileSystemSyncAccessHandle).
 */

/** A synchronous handle on one OPFS file; exclusive: one per file at a time (Chromium's default mode). */
export interface SyncAccessHandle {
  read(buffer: Uint8Array, options?: { at?: number }): number;
  write(buffer: Uint8Array, options?: { at?: number }): number;
  truncate(size: number): void;
  getSize(): number;
  flush(): void;
  close(): void;
}

export interface OpfsFileHandle {
  readonly kind: 'file';
  readonly name: string;
  createSyncAccessHandle(): Promise<SyncAccessHandle>;
}

export interface OpfsDirectoryHandle {
  readonly kind: 'directory';
  readonly name: string;
  getDirectoryHandle(name: string, options?: { create?: boolean }): Promise<OpfsDirectoryHandle>;
  getFileHandle(name: string, options?: { create?: boolean }): Promise<OpfsFileHandle>;
  removeEntry(name: string, options?: { recursive?: boolean }): Promise<void>;
  values(): AsyncIterable<OpfsFileHandle | OpfsDirectoryHandle>;
}

/** navigator.storage.getDirectory(): the origin's OPFS root. */
export async function opfsRoot(): Promise<OpfsDirectoryHandle> {
  const storage = (globalThis as { navigator?: { storage?: { getDirectory?: () => Promise<unknown> } } })
    .navigator?.storage;
  if (!storage?.getDirectory) {
    throw new Error(
      'this browser has no Origin Private File System (navigator.storage.getDirectory): use a current Chromium, Firefox or Safari',
    );
  }
  return (await storage.getDirectory()) as OpfsDirectoryHandle;
}

/** Opens `dir/parts[0]/parts[1]/...`, creating directories as needed. */
export async function opfsDirectory(parts: string[]): Promise<OpfsDirectoryHandle> {
  let dir = await opfsRoot();
  for (const p of parts) dir = await dir.getDirectoryHandle(p, { create: true });
  return dir;
}
