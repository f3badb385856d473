import { AsnArray, AsnProp, AsnPropTypes, AsnType, AsnTypeTypes } from '@peculiar/asn1-schema'

type AsnPropDecorator = ReturnType<typeof AsnProp>

// The ASN.1 module (version 1) that these classes implement is written out in
// docs/certificates.md. The project compiles without legacy decorator support, so each schema
// decorator is applied by calling it on the class or prototype below its class.

/** `SEQUENCE OF UTF8String`. */
export class Utf8StringList extends AsnArray<string> {
  constructor(items: string[] = []) {
    super(items)
    Object.setPrototypeOf(this, Utf8StringList.prototype)
  }
}
AsnType({ type: AsnTypeTypes.Sequence, itemType: AsnPropTypes.Utf8String })(Utf8StringList)

/** `Trait ::= SEQUENCE { name UTF8String, values SEQUENCE OF UTF8String }`. */
export class TraitAsn {
  name = ''
  values = new Utf8StringList()
}
applyProps(TraitAsn, {
  name: AsnProp({ type: AsnPropTypes.Utf8String }),
  values: AsnProp({ type: Utf8StringList }),
})

/** `SEQUENCE OF Trait`. */
export class TraitList extends AsnArray<TraitAsn> {
  constructor(items: TraitAsn[] = []) {
    super(items)
    Object.setPrototypeOf(this, TraitList.prototype)
  }
}
AsnType({ type: AsnTypeTypes.Sequence, itemType: TraitAsn })(TraitList)

/** `TaskScope ::= SEQUENCE { id, reason, servers [0] OPTIONAL, tools [1] OPTIONAL }`. */
export class TaskScopeAsn {
  id = ''
  reason = ''
  servers?: Utf8StringList
  tools?: Utf8StringList
}
applyProps(TaskScopeAsn, {
  id: AsnProp({ type: AsnPropTypes.Utf8String }),
  reason: AsnProp({ type: AsnPropTypes.Utf8String }),
  servers: AsnProp({ type: Utf8StringList, context: 0, optional: true }),
  tools: AsnProp({ type: Utf8StringList, context: 1, optional: true }),
})

/** `WritClaims ::= SEQUENCE { ... }`, version 1. */
export class WritClaimsAsn {
  version = 1
  kind = ''
  roles = new Utf8StringList()
  traits = new TraitList()
  task?: TaskScopeAsn
  parentSerial?: string
  depth = 0
  botInstance?: string
  generation = 0
  accessRequests = new Utf8StringList()
}
applyProps(WritClaimsAsn, {
  version: AsnProp({ type: AsnPropTypes.Integer }),
  kind: AsnProp({ type: AsnPropTypes.Utf8String }),
  roles: AsnProp({ type: Utf8StringList }),
  traits: AsnProp({ type: TraitList }),
  task: AsnProp({ type: TaskScopeAsn, context: 0, optional: true }),
  parentSerial: AsnProp({ type: AsnPropTypes.Utf8String, context: 1, optional: true }),
  depth: AsnProp({ type: AsnPropTypes.Integer }),
  botInstance: AsnProp({ type: AsnPropTypes.Utf8String, context: 2, optional: true }),
  generation: AsnProp({ type: AsnPropTypes.Integer }),
  accessRequests: AsnProp({ type: Utf8StringList }),
})

function applyProps(target: { prototype: object }, props: Record<string, AsnPropDecorator>): void {
  AsnType({ type: AsnTypeTypes.Sequence })(target as new () => unknown)
  for (const [name, decorate] of Object.entries(props)) decorate(target.prototype, name)
}
