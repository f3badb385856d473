import type { Host } from './host.js'
import { normalizeJoinToken, parseManifests } from './policy/manifest.js'
import type { Resource } from './policy/resource.js'

/**
 * Validates every document in `text`, then stores them all. Validation runs first so a file with
 * one bad document changes nothing. Each stored manifest is audited with its kind and name.
 */
export async function applyManifests(
  host: Host,
  text: string,
  source: string,
  actor: string,
): Promise<Resource[]> {
  const resources = parseManifests(text, source).map((resource) =>
    resource.kind === 'JoinToken' ? normalizeJoinToken(resource) : resource,
  )
  for (const resource of resources) {
    await host.store.putResource(resource)
    await host.audit.record({
      type: 'resource.apply',
      outcome: 'success',
      details: { kind: resource.kind, name: resource.metadata.name, source, actor },
    })
  }
  return resources
}
