import { stringify } from 'yaml'
import { openHost } from '../host.js'
import { applyManifests } from '../manifests.js'
import { readManifestFile } from '../policy/manifest.js'
import { RESOURCE_KINDS, type Resource, type ResourceKind } from '../policy/resource.js'
import { type Command, DATA_DIR_OPTION, dataDirOption, JSON_OPTION, UsageError } from './command.js'

/** Maps what a user may type (`role`, `roles`, `mcpserver`) to a resource kind. */
export function parseKind(text: string): ResourceKind {
  const wanted = text.toLowerCase().replace(/s$/, '')
  const kind = RESOURCE_KINDS.find((candidate) => candidate.toLowerCase() === wanted)
  if (!kind) {
    throw new UsageError(`unknown kind "${text}": use one of ${RESOURCE_KINDS.join(', ')}`)
  }
  return kind
}

export const applyCommand: Command = {
  name: 'apply',
  summary: 'create or update resources from a manifest file',
  details:
    'Every document is validated before any is stored, so a file with an error changes nothing.',
  options: {
    ...DATA_DIR_OPTION,
    file: {
      type: 'string',
      short: 'f',
      value: 'FILE',
      multiple: true,
      description: 'YAML or JSON manifest file, - for standard input; repeatable',
    },
  },
  async run(input) {
    const files = (input.values.file as string[] | undefined) ?? []
    if (files.length === 0) throw new UsageError('missing required option -f FILE')
    const texts = files.map((file) => ({ file, ...readManifestFile(file) }))
    const host = await openHost(dataDirOption(input))
    try {
      for (const { text, source } of texts) {
        for (const resource of await applyManifests(host, text, source, 'cli')) {
          process.stdout.write(
            `${resource.kind.toLowerCase()}/${resource.metadata.name} configured\n`,
          )
        }
      }
    } finally {
      await host.close()
    }
    return 0
  },
}

export const getCommand: Command = {
  name: 'get',
  summary: 'list resources of a kind, or show one as YAML',
  args: 'KIND [NAME]',
  arity: [1, 2],
  details: `KIND is one of ${RESOURCE_KINDS.join(', ')} (case-insensitive, plural allowed).`,
  options: { ...DATA_DIR_OPTION, ...JSON_OPTION },
  async run(input) {
    const kind = parseKind(input.positionals[0] as string)
    const name = input.positionals[1]
    const host = await openHost(dataDirOption(input), { mustExist: true })
    try {
      if (name !== undefined) {
        const resource = await host.store.getResource(kind, name)
        if (!resource) {
          process.stderr.write(`writ get: ${kind} "${name}" not found\n`)
          return 1
        }
        process.stdout.write(
          input.values.json ? `${JSON.stringify(resource, null, 2)}\n` : stringify(resource),
        )
        return 0
      }
      const resources = await host.store.listResources(kind)
      if (input.values.json) {
        process.stdout.write(`${JSON.stringify(resources, null, 2)}\n`)
      } else {
        process.stdout.write(formatTable(resources))
      }
      return 0
    } finally {
      await host.close()
    }
  },
}

export const deleteCommand: Command = {
  name: 'delete',
  summary: 'delete a resource',
  args: 'KIND NAME',
  arity: [2, 2],
  options: { ...DATA_DIR_OPTION },
  async run(input) {
    const kind = parseKind(input.positionals[0] as string)
    const name = input.positionals[1] as string
    const host = await openHost(dataDirOption(input), { mustExist: true })
    try {
      const deleted = await host.store.deleteResource(kind, name)
      if (!deleted) {
        process.stderr.write(`writ delete: ${kind} "${name}" not found\n`)
        return 1
      }
      await host.audit.record({
        type: 'resource.delete',
        outcome: 'success',
        details: { kind, name, actor: 'cli' },
      })
      process.stdout.write(`${kind.toLowerCase()}/${name} deleted\n`)
      return 0
    } finally {
      await host.close()
    }
  },
}

function formatTable(resources: Resource[]): string {
  if (resources.length === 0) return 'no resources\n'
  const rows = resources.map((resource) => [
    resource.metadata.name,
    Object.entries(resource.metadata.labels ?? {})
      .map(([key, value]) => `${key}=${value}`)
      .join(',') || '-',
    summarize(resource),
  ])
  const header = ['NAME', 'LABELS', 'SUMMARY']
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => (row[column] as string).length)),
  )
  return `${[header, ...rows]
    .map((row) =>
      row
        .map((cell, column) =>
          column < row.length - 1 ? cell.padEnd(widths[column] as number) : cell,
        )
        .join('  '),
    )
    .join('\n')}\n`
}

function summarize(resource: Resource): string {
  const spec = resource.spec as Record<string, unknown>
  switch (resource.kind) {
    case 'Bot':
      return `roles=${(spec.roles as string[]).join(',')}`
    case 'JoinToken':
      return `bot=${spec.bot} expires=${spec.expires}${spec.usedAt ? ' used' : ''}`
    case 'McpServer':
      return spec.http
        ? `http ${(spec.http as { url: string }).url}`
        : `stdio ${(spec.stdio as { command: string }).command}`
    case 'Role':
      return `maxTtl=${spec.maxTtl ?? '1h'}`
    default:
      return ''
  }
}
